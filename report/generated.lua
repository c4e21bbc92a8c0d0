-- A page's run-dependent content, written by the pre-render as plain markdown
-- (factcircuits.report.page_files): `::: {.generated file="report/_generated/pages/x.md"}`
-- is replaced by that file's blocks when Quarto renders the page, so the page executes no
-- code. Runs before Quarto's own filters (`at: pre-ast`), so the file's sections,
-- cross-references, citations and `.content-visible` blocks are handled as if typed here.
-- (An include shortcode would be read while Quarto lists the project, before the
-- pre-render writes the file, and fail on a fresh clone.)
function Div(div)
  if not div.classes:includes("generated") then
    return nil
  end
  local name = div.attributes["file"]
  local root = (quarto and quarto.project and quarto.project.directory) or "."
  local handle = io.open(pandoc.path.join({ root, name }), "r")
  if handle == nil then
    -- only when the pre-render did not run: say so on the page, and in the log
    io.stderr:write("generated.lua: " .. name .. " is missing (the pre-render writes it)\n")
    return pandoc.Para({ pandoc.Strong({ pandoc.Str("Not generated: " .. name) }) })
  end
  local text = handle:read("a")
  handle:close()
  return pandoc.read(text, "markdown").blocks
end
