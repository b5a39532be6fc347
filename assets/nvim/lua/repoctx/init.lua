-- repoctx for Neovim: ask about the repository of the current buffer.
--
-- Starts `repoctx serve --stdio` once per project (the git root of the buffer), speaks the
-- line-delimited JSON-RPC protocol of docs/protocol.md, and streams answers into the scratch
-- buffer `repoctx://answer`. Lua only, no dependencies; works with Neovim 0.7 and later.

local M = {}

local defaults = {
  cmd = { 'repoctx', 'serve', '--stdio' }, -- the server; e.g. { 'python3', '-m', 'repoctx', 'serve', '--stdio' }
  split = 'botright vsplit', -- how the answer window opens
  budget = nil, -- token budget of the pack (nil: the model's context less a reserve)
  include = nil, -- list of glob patterns
  exclude = nil, -- list of glob patterns
  refresh_on_save = true, -- re-pack after a file of the project is written
  keymap = '<leader>ra', -- visual mode: ask about the selection; false for no mapping
}

M.config = vim.deepcopy(defaults)
M.last_result = nil -- the result of the last answer that finished (for scripts and tests)

local ANSWER_NAME = 'repoctx://answer'
local clients = {} -- project root -> client
local last_root = nil
local levels = vim.log.levels

local function notify(message, level)
  vim.notify('repoctx: ' .. message, level or levels.INFO)
end

local function split_lines(text)
  local lines, start = {}, 1
  while true do
    local found = string.find(text, '\n', start, true)
    if not found then
      table.insert(lines, string.sub(text, start))
      return lines
    end
    table.insert(lines, string.sub(text, start, found - 1))
    start = found + 1
  end
end

local function is_null(value)
  return value == nil or value == vim.NIL
end

-- The answer buffer -------------------------------------------------------------------------

local function find_answer_buffer()
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_valid(buf) and vim.api.nvim_buf_get_name(buf) == ANSWER_NAME then
      return buf
    end
  end
  return nil
end

local function answer_buffer()
  local buf = find_answer_buffer()
  if not buf then
    buf = vim.api.nvim_create_buf(false, true)
    vim.api.nvim_buf_set_name(buf, ANSWER_NAME)
    vim.api.nvim_buf_set_option(buf, 'filetype', 'markdown')
  end
  if vim.fn.bufwinid(buf) == -1 then
    local previous = vim.api.nvim_get_current_win()
    vim.cmd(M.config.split)
    vim.api.nvim_win_set_buf(0, buf)
    vim.api.nvim_win_set_option(0, 'wrap', true)
    vim.api.nvim_set_current_win(previous)
  end
  return buf
end

local function scroll_to_end(buf)
  local last = vim.api.nvim_buf_line_count(buf)
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.api.nvim_win_get_buf(win) == buf then
      vim.api.nvim_win_set_cursor(win, { last, 0 })
    end
  end
end

-- Appends text to the end of the buffer: the first line continues the last line.
local function append_text(buf, text)
  if not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  local last = vim.api.nvim_buf_line_count(buf)
  local tail = vim.api.nvim_buf_get_lines(buf, last - 1, last, false)[1] or ''
  local parts = split_lines(text)
  parts[1] = tail .. parts[1]
  vim.api.nvim_buf_set_lines(buf, last - 1, last, false, parts)
  scroll_to_end(buf)
end

local function append_heading(buf, question, context)
  local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  local empty = #lines == 1 and lines[1] == ''
  local heading = '## ' .. split_lines(question)[1]
  local block = { heading }
  if context and context.selection and context.path then
    table.insert(block, string.format('_(selection of %s, lines %d-%d)_',
      vim.fn.fnamemodify(context.path, ':~:.'), context.startLine, context.endLine))
  end
  table.insert(block, '')
  table.insert(block, '')
  if empty then
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, block)
  else
    table.insert(block, 1, '')
    vim.api.nvim_buf_set_lines(buf, -1, -1, false, block)
  end
  scroll_to_end(buf)
end

-- The client: one server process per project ------------------------------------------------

local Client = {}
Client.__index = Client

function Client:send(message)
  message.jsonrpc = '2.0'
  local ok, err = pcall(vim.fn.chansend, self.job, vim.fn.json_encode(message) .. '\n')
  if not ok then
    notify('cannot write to the server: ' .. tostring(err), levels.ERROR)
  end
end

function Client:request(method, params, callback)
  self.next_id = self.next_id + 1
  local id = self.next_id
  self.callbacks[id] = callback
  self:send({ id = id, method = method, params = params or vim.empty_dict() })
  return id
end

function Client:notify_server(method, params)
  self:send({ method = method, params = params or vim.empty_dict() })
end

function Client:on_message(message)
  if type(message) ~= 'table' then
    return
  end
  if message.method ~= nil then
    local params = message.params or {}
    if message.method == '$/token' and self.streams[params.id] then
      self.streams[params.id](params.text)
    elseif message.method == '$/progress' then
      self.progress = params
    elseif message.method == '$/notice' then
      notify(tostring(params.message), levels.WARN)
    end
    return
  end
  local callback = self.callbacks[message.id]
  if callback then
    self.callbacks[message.id] = nil
    callback(not is_null(message.error) and message.error or nil, message.result)
  elseif not is_null(message.error) then
    notify(tostring(message.error.message), levels.ERROR)
  end
end

function Client:on_stdout(data)
  self.partial = self.partial .. data[1]
  for index = 2, #data do
    local line = self.partial
    self.partial = data[index]
    if line ~= '' then
      local ok, message = pcall(vim.fn.json_decode, line)
      if ok then
        self:on_message(message)
      else
        notify('not a protocol line from the server: ' .. line:sub(1, 200), levels.WARN)
      end
    end
  end
end

function Client:on_exit(code)
  if clients[self.root] == self then
    clients[self.root] = nil
  end
  for id, callback in pairs(self.callbacks) do
    self.callbacks[id] = nil
    callback({ code = -1, message = 'the server exited' }, nil)
  end
  if code ~= 0 and not self.closing then
    local detail = table.concat(self.stderr, '\n'):gsub('%s+$', '')
    notify(string.format('the server exited with code %d\n%s', code, detail:sub(-2000)), levels.ERROR)
  end
end

local function start_client(root)
  local self = setmetatable({
    root = root, next_id = 0, callbacks = {}, streams = {}, partial = '', stderr = {},
    asks = {}, conversation = nil, stats = nil, progress = nil, closing = false,
  }, Client)
  local ok, job = pcall(vim.fn.jobstart, M.config.cmd, {
    cwd = root,
    stdin = 'pipe',
    on_stdout = function(_, data) self:on_stdout(data) end,
    on_stderr = function(_, data)
      for _, line in ipairs(data) do
        if line ~= '' then
          table.insert(self.stderr, line)
          if #self.stderr > 50 then table.remove(self.stderr, 1) end
        end
      end
    end,
    on_exit = function(_, code) self:on_exit(code) end,
  })
  if not ok or type(job) ~= 'number' or job <= 0 then
    notify('cannot start ' .. table.concat(M.config.cmd, ' ') .. ' (' .. tostring(job) ..
      '); set the command with require("repoctx").setup{ cmd = {...} }', levels.ERROR)
    return nil
  end
  self.job = job
  self:request('initialize', { protocolVersion = 1, clientInfo = { name = 'repoctx.nvim' } },
    function(err)
      if err then notify('initialize failed: ' .. tostring(err.message), levels.ERROR) end
    end)
  local params = { roots = { root }, budget = M.config.budget, include = M.config.include,
    exclude = M.config.exclude }
  self:request('context/open', params, function(err, result)
    if err then
      notify('cannot open ' .. root .. ': ' .. tostring(err.message), levels.ERROR)
    else
      self.stats = result
    end
  end)
  return self
end

-- The project of a buffer: the git root of its folder, else the working directory.
local function project_root(buf)
  if vim.api.nvim_buf_get_option(buf, 'buftype') ~= '' and last_root then
    return last_root
  end
  local name = vim.api.nvim_buf_get_name(buf)
  local dir = name ~= '' and vim.fn.fnamemodify(name, ':p:h') or vim.fn.getcwd()
  if vim.fn.isdirectory(dir) == 0 then
    dir = vim.fn.getcwd()
  end
  local out = vim.fn.systemlist({ 'git', '-C', dir, 'rev-parse', '--show-toplevel' })
  if vim.v.shell_error == 0 and out[1] and out[1] ~= '' then
    return out[1]
  end
  return dir
end

local function client_for(buf)
  local root = project_root(buf or 0)
  last_root = root
  clients[root] = clients[root] or start_client(root)
  return clients[root]
end

-- Asking --------------------------------------------------------------------------------------

-- Asks `question`; `context` (optional): { path, selection, startLine, endLine, language }.
function M.ask(question, context)
  if type(question) ~= 'string' or question:match('^%s*$') then
    notify('ask what? :RepoctxAsk {question}', levels.WARN)
    return nil
  end
  local client = client_for(0)
  if not client then
    return nil
  end
  local buf = answer_buffer()
  local started = false
  local function start()
    if not started then
      started = true
      append_heading(buf, question, context)
    end
  end
  local params = { question = question, conversationId = client.conversation, context = context }
  local id
  id = client:request('ask', params, function(err, result)
    client.streams[id] = nil
    client.asks[id] = nil
    start()
    if err then
      append_text(buf, string.format('\n[error %s] %s\n', tostring(err.code), tostring(err.message)))
      return
    end
    client.conversation = result.conversationId
    if result.stopReason == 'cancelled' then
      append_text(buf, '\n[stopped]')
    end
    M.last_result = result
  end)
  client.streams[id] = function(text)
    start()
    append_text(buf, text)
  end
  client.asks[id] = true
  return id
end

local function editor_context(first, last, selection)
  local path = vim.api.nvim_buf_get_name(0)
  local filetype = vim.bo.filetype
  return {
    path = path ~= '' and vim.fn.fnamemodify(path, ':p') or nil,
    selection = selection,
    startLine = first,
    endLine = last,
    language = filetype:match('^[%w_+#.-]+$') and filetype or nil,
  }
end

-- :RepoctxAsk {question}; with a range (:'<,'>RepoctxAsk), the lines are sent as the selection.
function M.ask_command(opts)
  local context
  if opts.range and opts.range > 0 then
    local lines = vim.api.nvim_buf_get_lines(0, opts.line1 - 1, opts.line2, false)
    context = editor_context(opts.line1, opts.line2, table.concat(lines, '\n'))
  elseif vim.bo.buftype == '' then
    local line = vim.api.nvim_win_get_cursor(0)[1]
    context = editor_context(line, nil, nil)
  end
  return M.ask(opts.args, context)
end

-- The text of the last visual selection, character-exact for `v`, whole lines otherwise.
local function last_selection()
  local mode = vim.fn.visualmode()
  local from, to = vim.fn.getpos("'<"), vim.fn.getpos("'>")
  local lines = vim.api.nvim_buf_get_lines(0, from[2] - 1, to[2], false)
  if mode == 'v' and #lines > 0 then
    local last = lines[#lines]
    local width = #vim.fn.strcharpart(string.sub(last, to[3]), 0, 1)
    lines[#lines] = string.sub(last, 1, to[3] + math.max(width, 1) - 1)
    lines[1] = string.sub(lines[1], from[3])
  end
  return from[2], to[2], table.concat(lines, '\n')
end

-- The visual-mode mapping: asks for a question about the selection.
function M.ask_selection(question)
  local first, last, text = last_selection()
  question = question or vim.fn.input('repoctx: ask about the selection: ')
  return M.ask(question, editor_context(first, last, text))
end

function M.stop()
  local stopped = 0
  for _, client in pairs(clients) do
    for id in pairs(client.asks) do
      client:notify_server('$/cancelRequest', { id = id })
      stopped = stopped + 1
    end
  end
  if stopped == 0 then
    notify('nothing to stop')
  end
end

function M.busy()
  for _, client in pairs(clients) do
    if next(client.asks) ~= nil then
      return true
    end
  end
  return false
end

function M.new_conversation()
  local client = client_for(0)
  if client then
    client.conversation = nil
    notify('the next question starts a new conversation')
  end
end

function M.refresh(quiet)
  local client = client_for(0)
  if not client then
    return
  end
  client:request('context/refresh', nil, function(err, result)
    if err then
      notify('refresh failed: ' .. tostring(err.message), levels.ERROR)
    elseif not quiet then
      notify(string.format('%d files, %d tokens', result.files, result.tokens))
    end
  end)
end

function M.conversations()
  local client = client_for(0)
  if not client then
    return
  end
  client:request('conversation/list', nil, function(err, result)
    if err then
      notify(tostring(err.message), levels.ERROR)
      return
    end
    local items = result.conversations
    if #items == 0 then
      notify('no conversations about ' .. client.root)
      return
    end
    vim.ui.select(items, {
      prompt = 'Continue a conversation:',
      format_item = function(item) return item.title .. ' (' .. item.messages .. ' messages)' end,
    }, function(choice)
      if choice then
        client.conversation = choice.id
        notify('continuing: ' .. choice.title)
      end
    end)
  end)
end

function M.status()
  local client = clients[project_root(0)]
  if not client then
    notify('no server for this project yet')
  elseif not client.stats then
    notify('packing ' .. client.root)
  else
    local s = client.stats
    notify(string.format('%s: %d files, %d of %d tokens, %d omitted, model %s', client.root,
      s.files, s.tokens, s.budget, s.omitted, tostring(s.model)))
  end
end

local function close_client(client)
  client.closing = true
  client:request('shutdown', nil, function() end)
  client:notify_server('exit')
end

function M.close()
  local client = clients[project_root(0)]
  if client then
    close_client(client)
  end
end

local function refresh_after_write(args)
  local path = vim.fn.fnamemodify(args.file, ':p')
  for root, client in pairs(clients) do
    if path:sub(1, #root + 1) == root .. '/' and client.stats then
      if client.refresh_timer then
        client.refresh_timer:stop()
      end
      client.refresh_timer = vim.defer_fn(function()
        client.refresh_timer = nil
        client:request('context/refresh', nil, function(err)
          if err then notify('refresh failed: ' .. tostring(err.message), levels.WARN) end
        end)
      end, 300)
    end
  end
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(defaults), opts or {})
  if opts and opts.cmd then
    M.config.cmd = opts.cmd -- a list: replaced, not merged
  end
  local group = vim.api.nvim_create_augroup('repoctx', { clear = true })
  if M.config.refresh_on_save then
    vim.api.nvim_create_autocmd('BufWritePost', { group = group, callback = refresh_after_write })
  end
  vim.api.nvim_create_autocmd('VimLeavePre', {
    group = group,
    callback = function()
      for _, client in pairs(clients) do
        close_client(client)
      end
    end,
  })
  if M.config.keymap then
    vim.keymap.set('x', M.config.keymap, '<Plug>(RepoctxAskSelection)', { remap = true })
  end
end

return M
