--[[
provenance.lua: in HTML, each `{{< var name >}}` shows on hover where its number comes from.

The report stage writes `_provenance.json` next to `_variables.yml` (hetfx.paper.provenance):
for each variable its stage, file, row and column (or the computation) and unrounded value,
joined into a `title`. With real Quarto this filter runs at `pre-ast`, where a shortcode is
still a Span of class `quarto-shortcode__` (Quarto expands it later), and wraps that Span in
`<span class="hetfx-source" title="...">`. The pandoc fallback's filter (hetfx.lua) does the
same where it expands the shortcode. Other formats (the PDFs) are left as they are.
]]

local function read_json(path)
  local f = io.open(path, 'r')
  if not f then return {} end
  local text = f:read('a')
  f:close()
  return pandoc.json.decode(text, false)
end

local dir = pandoc.path.directory(pandoc.path.directory(PANDOC_SCRIPT_FILE))
local sources = read_json(pandoc.path.join({ dir, '_provenance.json' }))

function Span(span)
  if not FORMAT:match('html') or not span.classes:includes('quarto-shortcode__') then return nil end
  local name = (span.attributes['data-raw'] or ''):match('^{{<%s*var%s+(%S+)%s*>}}$')
  local entry = name and sources[name]
  if not entry then return nil end
  return pandoc.Span({ span }, { class = 'hetfx-source', title = entry.title })
end
