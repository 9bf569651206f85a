--[[
hetfx.lua: the Quarto-specific parts of the manuscript, for rendering with plain pandoc
when the Quarto CLI is not installed (see hetfx.paper.render). Real Quarto does not use this file.

Passes, in order:
  0. metadata    `date: YYYY-MM-DD` (or `today`) printed as Quarto prints it ("November 27, 2026").
  1. shortcodes  `{{< var a.b >}}` in text, table cells, captions, math and title/abstract,
                 looked up in `_variables.yml` (metadata `hetfx-variables` overrides the path);
                 in HTML wrapped in a span whose title is the number's source, from
                 `_provenance.json` beside it (as _filters/provenance.lua does for Quarto).
                 (`{{< include >}}` is expanded before parsing, by hetfx.paper.render.)
  2. numbering   labelled figures (`#fig-`), tables (`#tbl-`) and, with `number-sections: true`,
                 headings, in document order; captions get "Figure N: " / "Table N: ".
                 Metadata `hetfx-number-prefix: A` numbers figures and tables A1, A2, ...
                 (an appendix); real Quarto reads the same key through _filters/number-prefix.lua.
  3. xrefs       `@fig-x`, `@tbl-x`, `@sec-x` (also `[@fig-x]`, `[-@fig-x]`, `@Fig-x`) become
                 "Figure N" links; other citations are left to --citeproc.
  4. finish      a "References" section if the document cites but has no `::: {#refs}` div.

Every problem (undefined variable, unknown or duplicate label) stops the render with an error
that names all offending names at once, instead of leaving "??" in the output.
]]

local stringify = pandoc.utils.stringify

local XREF_KINDS = { fig = 'Figure', tbl = 'Table', sec = 'Section' }

--- Stop pandoc with a message that lists every offending name.
local function fail(what, names)
  table.sort(names)
  error('hetfx.lua: ' .. what .. ': ' .. table.concat(names, ', '), 0)
end

-- ---------------------------------------------------------------------------------------
-- 1. Shortcodes
-- ---------------------------------------------------------------------------------------

local variables_path = '_variables.yml'
local variables = nil -- table of metadata values, or false if the file does not exist
local undefined = {} -- set of undefined variable names
local bad_shortcodes = {} -- set of unsupported shortcodes

--- Read `_variables.yml` once, as pandoc metadata (so values may contain markdown).
local function load_variables()
  if variables == nil then
    local f = io.open(variables_path, 'r')
    if f then
      local text = f:read('a'):gsub('^%-%-%-%s*\n', '')
      f:close()
      variables = pandoc.read('---\n' .. text .. '\n---\n', 'markdown').meta
    else
      variables = false
    end
  end
  return variables
end

--- Inlines for variable `name` ("a.b.c" walks nested maps), or nil if undefined.
local function lookup(name)
  local value = load_variables()
  if not value then return nil end
  for key in name:gmatch('[^%.]+') do
    local kind = pandoc.utils.type(value)
    if kind ~= 'table' and kind ~= 'Meta' then return nil end
    value = value[key]
    if value == nil then return nil end
  end
  local kind = pandoc.utils.type(value)
  if kind == 'Inlines' then return value:clone() end
  if kind == 'Blocks' then return pandoc.utils.blocks_to_inlines(value) end
  if kind == 'string' or kind == 'boolean' or kind == 'number' then
    return pandoc.Inlines { pandoc.Str(tostring(value)) }
  end
  return nil -- a map or a list is not a printable value
end

local sources = nil -- variable -> its source, from `_provenance.json` beside `_variables.yml`

--- In HTML, `value` in a span whose title says where the number comes from (see provenance.lua).
local function with_source(name, value)
  if not FORMAT:match('html') then return value end
  if sources == nil then
    local path = pandoc.path.join({ pandoc.path.directory(variables_path), '_provenance.json' })
    local f = io.open(path, 'r')
    sources = f and pandoc.json.decode(f:read('a'), false) or {}
    if f then f:close() end
  end
  local entry = sources[name]
  if not entry then return value end
  return pandoc.Inlines { pandoc.Span(value, { class = 'hetfx-source', title = entry.title }) }
end

--- Expand one shortcode body ("var a.b") into Inlines.
local function shortcode(body)
  local name, arg = body:match('^(%S+)%s*(.-)$')
  if name == 'var' then
    local value = lookup(arg)
    if value then return with_source(arg, value) end
    undefined[arg] = true
  else
    bad_shortcodes['{{< ' .. body .. ' >}}'] = true
  end
  return pandoc.Inlines { pandoc.Str('??') }
end

--- Replace `{{< ... >}}` runs (which pandoc splits into Str and Space elements) in a list.
local function expand_inlines(inlines)
  if not stringify(inlines):find('{{<', 1, true) then return nil end
  local items, out, i = { table.unpack(inlines) }, pandoc.Inlines {}, 1
  while i <= #items do
    local el = items[i]
    local start = el.t == 'Str' and el.text:find('{{<', 1, true)
    if not start then
      out:insert(el)
      i = i + 1
    else
      -- Gather the text of the shortcode until its closing `>}}`.
      local text, j = el.text:sub(start), i
      while not text:find('>}}', 1, true) and items[j + 1] ~= nil do
        j = j + 1
        local e = items[j]
        if e.t == 'Str' then
          text = text .. e.text
        elseif e.t == 'Space' or e.t == 'SoftBreak' then
          text = text .. ' '
        else
          break
        end
      end
      local body, rest = text:match('^{{<%s*(.-)%s*>}}(.*)$')
      if not body then
        fail('unterminated shortcode', { text })
      end
      if start > 1 then out:insert(pandoc.Str(el.text:sub(1, start - 1))) end
      out:extend(shortcode(body))
      if rest ~= '' then
        items[j] = pandoc.Str(rest) -- may hold another shortcode: look at it again
        i = j
      else
        i = j + 1
      end
    end
  end
  return out
end

--- Shortcodes inside TeX math are plain text substitutions.
local function expand_math(el)
  el.text = el.text:gsub('{{<%s*(.-)%s*>}}', function(body) return stringify(shortcode(body)) end)
  return el
end

local shortcode_filter = { Inlines = expand_inlines, Math = expand_math }

local MONTHS = { 'January', 'February', 'March', 'April', 'May', 'June', 'July', 'August',
  'September', 'October', 'November', 'December' }

--- Quarto conveniences in the front matter: shortcodes, `date: today`, author maps in HTML.
local function expand_meta(meta)
  if meta['hetfx-variables'] then variables_path = stringify(meta['hetfx-variables']) end
  local function walk(value)
    local kind = pandoc.utils.type(value)
    if kind == 'Inlines' or kind == 'Blocks' then return value:walk(shortcode_filter) end
    if kind == 'table' or kind == 'List' then
      for k, v in pairs(value) do value[k] = walk(v) end
    end
    return value
  end
  for key, value in pairs(meta) do meta[key] = walk(value) end
  -- Dates as Quarto prints them with `date-format: long` (the default): "November 27, 2026".
  -- The manuscript fixes its date in _quarto.yml, so that renders are reproducible.
  -- Month names are spelled out here, not by os.date, which would follow the machine's locale.
  local date = meta.date and stringify(meta.date)
  local format = meta['date-format'] and stringify(meta['date-format']) or 'long'
  local y, m, d = nil, nil, nil
  if date == 'today' or date == 'last-modified' then
    local now = os.date('*t')
    y, m, d = now.year, now.month, now.day
  elseif date then
    y, m, d = date:match('^(%d%d%d%d)%-(%d%d)%-(%d%d)$')
  end
  if y and format == 'long' then
    local text = MONTHS[tonumber(m)] .. ' ' .. tonumber(d) .. ', ' .. tonumber(y)
    meta.date = pandoc.Inlines(text)
  elseif y and format == 'iso' then
    meta.date = pandoc.Inlines(string.format('%04d-%02d-%02d', tonumber(y), tonumber(m), tonumber(d)))
  end
  if FORMAT:match('html') and meta.author then
    -- Quarto allows `author: [{name: ..., affiliations: ...}]`; pandoc's HTML template wants text.
    local authors = pandoc.utils.type(meta.author) == 'List' and meta.author or { meta.author }
    for k, a in ipairs(authors) do
      if pandoc.utils.type(a) == 'table' and a.name then authors[k] = a.name end
    end
    meta.author = pandoc.List(authors)
  end
  return meta
end

local function check_shortcodes(doc)
  local names = {}
  for name in pairs(undefined) do names[#names + 1] = name end
  if #names > 0 then
    fail('undefined {{< var >}} name(s) (not a single value in ' .. variables_path .. ')', names)
  end
  local codes = {}
  for code in pairs(bad_shortcodes) do codes[#codes + 1] = code end
  if #codes > 0 then fail('unsupported shortcode(s)', codes) end
  return doc
end

-- ---------------------------------------------------------------------------------------
-- 2. Numbering
-- ---------------------------------------------------------------------------------------

local labels = {} -- identifier -> { kind = 'Figure', number = '1' }
local counts = { fig = 0, tbl = 0 }
local sections = {} -- heading counters per level
local number_sections = false
local number_prefix = '' -- metadata `hetfx-number-prefix` ("A" numbers an appendix A1, A2, ...)
local duplicates = {}
local misplaced = {}

local function register(id, kind, number)
  if labels[id] then duplicates[#duplicates + 1] = id end
  labels[id] = { kind = kind, number = number }
end

--- Put "Figure 1: " in front of a caption (a Caption's long Blocks).
local function prefix_caption(caption, kind, number)
  local lead = pandoc.Inlines { pandoc.Str(kind), pandoc.Space(), pandoc.Str(number .. ':') }
  local first = caption.long[1]
  if first and (first.t == 'Plain' or first.t == 'Para') then
    if #first.content > 0 then lead:insert(pandoc.Space()) end
    first.content = lead .. first.content
  else
    caption.long:insert(1, pandoc.Plain(lead))
  end
  return caption
end

local function number_float(el, prefix)
  local id = el.identifier
  -- Without a `fig-`/`tbl-` label a float is unnumbered, as in Quarto.
  if not id:match('^' .. prefix .. '%-') then return nil end
  counts[prefix] = counts[prefix] + 1
  local number = number_prefix .. tostring(counts[prefix])
  register(id, XREF_KINDS[prefix], number)
  el.caption = prefix_caption(el.caption, XREF_KINDS[prefix], number)
  return el
end

local function number_header(h)
  if not number_sections or h.classes:includes('unnumbered') then
    if h.identifier:match('^sec%-') then register(h.identifier, 'Section', nil) end
    return nil
  end
  sections[h.level] = (sections[h.level] or 0) + 1
  for level = h.level + 1, #sections do sections[level] = nil end
  local parts = {}
  for level = 1, h.level do parts[level] = tostring(sections[level] or 0) end
  local number = table.concat(parts, '.')
  if h.identifier:match('^sec%-') then register(h.identifier, 'Section', number) end
  h.attributes['number'] = number
  h.content = pandoc.Inlines { pandoc.Span(number, { class = 'header-section-number' }), pandoc.Space() }
    .. h.content
  return h
end

--- Labels that the fallback cannot number (Quarto's div-style floats, inline images).
local function stray_label(el)
  local id = el.identifier
  if id:match('^fig%-') or id:match('^tbl%-') then
    misplaced[#misplaced + 1] = id .. ' (on ' .. el.t .. ')'
  end
end

local numbering_filter = {
  traverse = 'topdown',
  Figure = function(el) return number_float(el, 'fig') end,
  Table = function(el) return number_float(el, 'tbl') end,
  Header = number_header,
  Div = stray_label,
  Span = stray_label,
  Image = stray_label,
}

local function number_document(doc)
  number_sections = doc.meta['number-sections'] == true
  if doc.meta['hetfx-number-prefix'] then number_prefix = stringify(doc.meta['hetfx-number-prefix']) end
  doc.blocks = doc.blocks:walk(numbering_filter)
  if #duplicates > 0 then fail('duplicate label(s)', duplicates) end
  if #misplaced > 0 then
    fail('labels the renderer cannot number (write a figure as a paragraph of its own, '
      .. '`![caption](file){#fig-x}`, a table as a pipe table followed by `: Caption {#tbl-x}`)',
      misplaced)
  end
  return doc
end

-- ---------------------------------------------------------------------------------------
-- 3. Cross-references
-- ---------------------------------------------------------------------------------------

local unknown = {}
local has_citations = false

--- "fig-x" for "@fig-x" or "@Fig-x"; nil for a bibliography key.
local function xref_id(citation_id)
  local prefix, rest = citation_id:match('^(%a+)(%-.+)$')
  if prefix and XREF_KINDS[prefix:lower()] then return prefix:lower() .. rest end
  return nil
end

local function resolve_cite(cite)
  local n_xref = 0
  for _, c in ipairs(cite.citations) do
    if xref_id(c.id) then n_xref = n_xref + 1 end
  end
  if n_xref == 0 then
    has_citations = true
    return nil
  end
  if n_xref < #cite.citations then
    fail('cross-references and citations mixed in one bracket', { stringify(cite.content) })
  end
  local out = pandoc.Inlines {}
  for k, c in ipairs(cite.citations) do
    local id = xref_id(c.id)
    local label = labels[id]
    if not label then
      unknown[#unknown + 1] = '@' .. c.id
    elseif not label.number then
      unknown[#unknown + 1] = '@' .. c.id .. ' (section references need `number-sections: true`)'
    else
      local text = c.mode == 'SuppressAuthor' and label.number or (label.kind .. '\u{a0}' .. label.number)
      if k > 1 then out:extend { pandoc.Str(','), pandoc.Space() } end
      if #c.prefix > 0 then out:extend(c.prefix .. { pandoc.Space() }) end
      out:insert(pandoc.Link(text, '#' .. id, '', { class = 'quarto-xref' }))
      out:extend(c.suffix)
    end
  end
  return out
end

local function check_xrefs(doc)
  if #unknown > 0 then fail('unknown cross-reference label(s)', unknown) end
  return doc
end

-- ---------------------------------------------------------------------------------------
-- 4. Finish: where citeproc puts the reference list
-- ---------------------------------------------------------------------------------------

local function add_reference_section(doc)
  if not has_citations then return nil end
  local has_refs = false
  doc.blocks:walk { Div = function(d) if d.identifier == 'refs' then has_refs = true end end }
  if not has_refs then
    doc.blocks:insert(pandoc.Header(1, 'References', { id = 'references', class = 'unnumbered' }))
    doc.blocks:insert(pandoc.Div({}, { id = 'refs' }))
  end
  return doc
end

return {
  { Meta = expand_meta },
  shortcode_filter,
  { Pandoc = check_shortcodes },
  { Pandoc = number_document },
  { Cite = resolve_cite },
  { Pandoc = check_xrefs },
  { Pandoc = add_reference_section },
}
