--[[
number-prefix.lua: number a document's figures and tables A1, A2, ... with real Quarto.

A document sets the prefix in its front matter (the appendix: `hetfx-number-prefix: A`); the
pandoc fallback's filter (hetfx.lua) reads the same key. `_quarto.yml` loads this filter at
Quarto's `pre-ast` entry point, before Quarto reads its `crossref` options, and the filter
translates the key into Quarto's own settings:

  * HTML and other formats Quarto numbers itself: `crossref` titles and prefixes
    ("Figure A", "Table A") and the built-in `fig` and `tbl` float types redeclared with
    `space-before-numbering: false` (Quarto >= 1.4, "custom cross-reference types"), so that
    captions read "Figure A1:" and references "Figure A1";
  * Typst, which numbers figures itself: a `#set figure(numbering: ...)` rule at the top of
    the body, so that captions and `@fig-` references read "Figure A1" as well.

Settings a document gives itself under `crossref` win over the ones derived here.
]]

local stringify = pandoc.utils.stringify

local KINDS = { fig = 'Figure', tbl = 'Table' }

local prefix = nil

local function is_typst()
  return FORMAT == 'typst' or (quarto and quarto.doc and quarto.doc.is_format('typst'))
end

local function set_default(map, key, value)
  if map[key] == nil then map[key] = value end
end

local function configure(meta)
  local value = meta['hetfx-number-prefix']
  if value == nil then return nil end
  prefix = stringify(value)
  if prefix == '' or is_typst() then return nil end
  local crossref = meta.crossref
  if pandoc.utils.type(crossref) ~= 'table' then crossref = {} end
  local custom = crossref.custom and pandoc.List(crossref.custom) or pandoc.List {}
  local declared = {}
  for _, entry in ipairs(custom) do declared[stringify(entry.key or '')] = true end
  for key, title in pairs(KINDS) do
    local label = title .. ' ' .. prefix
    -- metadata values as Quarto's own YAML reader makes them (Inlines), not Lua strings
    set_default(crossref, key .. '-title', pandoc.Inlines(label))
    set_default(crossref, key .. '-prefix', pandoc.Inlines(label))
    if not declared[key] then
      custom:insert {
        kind = 'float', key = key, ['reference-prefix'] = label,
        ['space-before-numbering'] = false,
      }
    end
  end
  -- a stable order of the redeclared types (pairs() has none)
  table.sort(custom, function(a, b) return stringify(a.key or '') < stringify(b.key or '') end)
  crossref.custom = custom
  meta.crossref = crossref
  return meta
end

local function typst_numbering(doc)
  if not prefix or prefix == '' or not is_typst() then return nil end
  local literal = prefix:gsub('\\', '\\\\'):gsub('"', '\\"')
  local rule = '#set figure(numbering: n => "' .. literal .. '" + str(n))'
  doc.blocks:insert(1, pandoc.RawBlock('typst', rule))
  return doc
end

return {
  { Meta = configure },
  { Pandoc = typst_numbering },
}
