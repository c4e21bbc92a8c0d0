"""OpenAI generation against a local OpenAI-compatible server on 127.0.0.1 (real sockets, the
real `openai` client pointed at it through OPENAI_BASE_URL)."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from factcircuits import cli
from factcircuits.data.generate import (
    GenerateConfig,
    generate_dataset,
    sidecar_path,
)
from factcircuits.data.generated_items import normalize_item
from factcircuits.errors import UserError


def ok(items, prompt_tokens=100, completion_tokens=50):
    return 200, {
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": json.dumps({"items": items})}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def raw(content):
    status, body = ok([])
    body["choices"][0]["message"]["content"] = content
    return status, body


def error(status, code=None):
    return status, {"error": {"message": f"test error {status}", "type": "test", "code": code}}


def q(question, answer, subject="Paris", swap="Rome"):
    return {"question": question, "answer": answer, "subject": subject, "corrupted_subject": swap}


class FakeOpenAI:
    """Replays `script` (one response per request, in order), then `default`."""

    def __init__(self):
        self.script: list = []
        self.default = error(500)
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.delay = 0.0
        self.lock = threading.Lock()

    def respond(self, body):
        with self.lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            action = self.script.pop(0) if self.script else self.default
        time.sleep(self.delay)
        with self.lock:
            self.in_flight -= 1
        return action(body) if callable(action) else action

    def user_text(self, i):
        return self.requests[i]["messages"][-1]["content"]


@pytest.fixture
def server(monkeypatch):
    fake = FakeOpenAI()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions"
            status, payload = fake.respond(body)
            html = isinstance(payload, str)  # a proxy's page instead of the API's JSON
            data = payload.encode() if html else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html" if html else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    yield fake
    httpd.shutdown()
    httpd.server_close()


def config(**kw):
    base = {"topic": "Paris", "n": 4, "backoff": 0.001, "max_attempts": 3, "timeout": 5.0}
    return GenerateConfig(**(base | kw))


FOUR = [q("Is Paris the capital of France", True), q("Is the Louvre in Paris?", True,
        "Louvre", "Prado"), q("Is Paris in Spain?", False), q("Is Paris in Asia?", False)]


def test_success_writes_normalized_rows_and_sidecar(server, tmp_path):
    server.script = [ok(FOUR, 120, 80)]
    out = tmp_path / "paris.csv"
    frame, _ = generate_dataset(config(), out)
    assert out.exists() and sidecar_path(out).exists()
    assert frame["prompt"].tolist()[0] == "Is Paris the capital of France?\n"  # "?\n" added
    assert frame["label"].tolist() == [True, True, False, False]
    assert frame.loc[1, "corrupted_prompt"] == "Is the Prado in Paris?\n"
    side = json.loads(sidecar_path(out).read_text())
    assert side["model"] == "gpt-4o-2024-08-06" and side["config"]["seed"] == 0
    assert side["usage"]["prompt_tokens"] == 120 and side["usage"]["completion_tokens"] == 80
    assert side["cost_estimate_usd"] == pytest.approx((120 * 2.50 + 80 * 10.00) / 1e6)
    assert "yes/no questions about" in side["request_template"]
    sent = server.requests[0]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["strict"] is True
    assert sent["model"] == "gpt-4o-2024-08-06" and sent["seed"] == 0
    assert "2 whose correct answer is yes" in server.user_text(0)


def test_malformed_json_then_success(server, tmp_path):
    server.script = [raw('{"items": [ {"question": '), ok(FOUR)]
    frame, meta = generate_dataset(config(), tmp_path / "out.csv")
    assert len(frame) == 4
    assert meta["usage"]["malformed"] == 1 and meta["usage"]["requests"] == 2


def test_429_twice_then_success(server, tmp_path):
    server.script = [error(429), error(429), ok(FOUR)]
    frame, meta = generate_dataset(config(), tmp_path / "out.csv")
    assert len(frame) == 4 and meta["usage"]["retries"] == 2 and len(server.requests) == 3


def test_persistent_500_clear_error_and_no_file(server, tmp_path):
    out = tmp_path / "out.csv"
    with pytest.raises(UserError) as info:
        generate_dataset(config(max_attempts=3), out)
    message = str(info.value)
    assert "gave up after 3 attempts" in message and "HTTP 500" in message
    assert "\n" not in message and len(server.requests) == 3
    assert list(tmp_path.iterdir()) == []


def test_failure_leaves_the_previous_file_intact(server, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("previous\n")
    with pytest.raises(UserError):
        generate_dataset(config(), out)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_401_is_one_line_and_not_retried(server, tmp_path, capsys):
    server.default = error(401)
    out = tmp_path / "out.csv"
    code = cli.main(["dataset", "generate", "--topic", "Paris", "--n", "4", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "OPENAI_API_KEY" in err
    assert len(server.requests) == 1 and not out.exists()


def test_unbalanced_answers_are_topped_up(server, tmp_path):
    all_true = [q(f"Is landmark {c} in Paris?", True, f"landmark {c}", "x") for c in "ABCD"]
    server.script = [ok(all_true), ok([q("Is Paris in Peru?", False),
                                      q("Is Paris on the Moon?", False)])]
    frame, meta = generate_dataset(config(), tmp_path / "out.csv")
    assert frame["label"].sum() == 2 and (~frame["label"]).sum() == 2
    assert len(server.requests) == 2
    second = server.user_text(1)
    assert "0 whose correct answer is yes (answer=true) and 2 whose correct answer is no" in (
        second)
    assert "Is landmark A in Paris?" in second  # told what exists already
    assert meta["cleaning"]["extra"] == 2  # surplus true rows trimmed


def test_duplicates_and_near_duplicates_removed(server, tmp_path):
    server.script = [ok([
        q("Is Paris the capital of France?", True),
        q("is paris the capital of France", True),  # exact duplicate after normalizing
        q("Is Paris the capital city of France?", True),  # near duplicate
        q("Is Paris in Spain?", False),
        q("Is Paris in Italy?", False),  # a different fact, kept
    ]), ok([q("Is the Louvre in Paris?", True, "Louvre", "Prado")])]
    frame, meta = generate_dataset(config(), tmp_path / "out.csv")
    assert sorted(frame["prompt"]) == sorted([
        "Is Paris the capital of France?\n", "Is the Louvre in Paris?\n",
        "Is Paris in Spain?\n", "Is Paris in Italy?\n"])
    assert meta["cleaning"]["duplicates"] == 1 and meta["cleaning"]["near_duplicates"] == 1


def test_missing_key_is_one_line_error(server, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY")
    out = tmp_path / "out.csv"
    code = cli.main(["dataset", "generate", "--topic", "Paris", "--n", "4", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "OPENAI_API_KEY is not set" in err
    assert server.requests == [] and not out.exists()


def test_concurrency_limit_and_batches(server, tmp_path):
    batch_ids = itertools.count()

    def answer(body):
        text = body["messages"][-1]["content"]
        pattern = r"(\d+) whose correct answer is yes \(answer=true\) and (\d+)"
        t, f = map(int, re.search(pattern, text).groups())
        k = next(batch_ids)
        return ok([q(f"Is fact number {100 * k + i} true?", True, "x", "y") for i in range(t)]
                  + [q(f"Is claim number {100 * k + i} false?", False, "x", "y") for i in range(f)])

    server.script = [answer] * 3
    server.delay = 0.1
    frame, _ = generate_dataset(config(n=30, batch_size=10, concurrency=2), tmp_path / "o.csv")
    assert len(frame) == 30 and frame["label"].sum() == 15
    assert len(server.requests) == 3 and server.max_in_flight == 2
    assert len({r["seed"] for r in server.requests}) == 3  # distinct seeds per batch


def test_cli_generate_cloze(server, tmp_path, capsys):
    server.script = [ok([
        {"prompt": "The capital of France is", "answer": "Paris", "counterfactual": "Rome",
         "subject": "France", "corrupted_subject": "Italy"},
        {"prompt": "The Louvre is in the city of ...", "answer": "Paris.",
         "counterfactual": "Paris", "subject": "Louvre", "corrupted_subject": "Prado"},
        {"prompt": "The Seine flows through", "answer": "Paris", "counterfactual": "London",
         "subject": "Seine", "corrupted_subject": "Thames"},
    ])]
    out = tmp_path / "cloze.jsonl"
    assert cli.main(["dataset", "generate", "--topic", "Paris", "--n", "2", "--task", "cloze",
                     "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["answer"] for r in rows] == [" Paris", " Paris"]  # answer == counterfactual dropped
    assert rows[1]["prompt"] == "The Seine flows through"
    assert rows[1]["corrupted_prompt"] == "The Thames flows through"
    assert "wrote" in capsys.readouterr().out


def test_normalize_item_rejects_bad_items():
    assert normalize_item("yesno", {"question": "Is it?", "answer": "yes"}) is None
    assert normalize_item("yesno", {"question": "  ", "answer": True}) is None
    row = normalize_item("yesno", {"question": "Is Paris\nin France ?", "answer": False,
                                   "subject": "Lyon"})
    assert row["prompt"] == "Is Paris in France?\n" and row["subject"] == ""  # not in prompt


def test_malformed_json_is_described_once(server, tmp_path):
    # The decoder's own message ends in "at"; the position follows it once ("at at" before).
    server.default = raw('{"items": [ {"question": "Is Paris')
    with pytest.raises(UserError) as info:
        generate_dataset(config(max_attempts=2), tmp_path / "out.csv")
    message = str(info.value)
    assert "Unterminated string starting at: line 1 column" in message
    assert "at at" not in message and "\n" not in message


def test_output_path_is_checked_before_any_request(server, tmp_path, capsys):
    for out in (tmp_path, tmp_path / "facts.json", tmp_path / "file.csv" / "x.csv"):
        (tmp_path / "file.csv").write_text("a file, not a folder")
        code = cli.main(["dataset", "generate", "--topic", "Paris", "--n", "4", "--out",
                         str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "--out" in err, err
    assert server.requests == []  # nothing paid for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.csv"]  # no orphan sidecar


def test_failed_data_write_leaves_no_orphan_sidecar(server, tmp_path, monkeypatch):
    from factcircuits.data import generate

    server.script = [ok(FOUR)]
    out = tmp_path / "out.csv"
    real = generate.atomic_write_bytes

    def failing(path, data):
        if path == out:
            raise OSError(28, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(generate, "atomic_write_bytes", failing)
    with pytest.raises(OSError):
        generate_dataset(config(), out)
    assert list(tmp_path.iterdir()) == []  # the sidecar went with the data


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("concurrency", 0),
                                          ("max_attempts", 0), ("timeout", 0.0)])
def test_config_values_below_one_are_refused(field, value):
    with pytest.raises(UserError, match=f"{value}: must be"):
        config(**{field: value}).check()


def test_an_endpoint_that_never_answers_is_one_line_within_the_deadline(server, tmp_path,
                                                                         capsys):
    server.delay = 5.0  # accepts the connection, answers after every deadline
    started = time.monotonic()
    with pytest.raises(UserError, match=r"^no dataset within --deadline 1 s \(\d+ requests"):
        generate_dataset(config(timeout=0.3, deadline=1.0, max_attempts=5), tmp_path / "o.csv")
    assert time.monotonic() - started < 4  # the deadline, not 5 attempts × the timeout
    said = capsys.readouterr().err
    assert "dataset generate: request failed (APITimeoutError" in said and "retry 2 of 5" in said
    assert not (tmp_path / "o.csv").exists()


def test_an_html_page_with_status_200_is_one_line(server, tmp_path):
    server.default = (200, "<html><body>Please log in to the proxy</body></html>")
    with pytest.raises(UserError, match="answered with something other than the API's JSON"):
        generate_dataset(config(), tmp_path / "o.csv")
