-- repoctx for Neovim: ask about the repository of the current buffer.
--
-- Starts `repoctx serve --stdio` once per project (the git root of the buffer), speaks the
-- line-delimited JSON-RPC protocol of docs/protocol.md, and streams answers into the scratch
-- buffer `repoctx://answer`. Lua only, no dependencies; works with Neovim 0.7 and later.

local answer = require('repoctx.answer')
local Client = require('repoctx.client')

local M = {}

local defaults = {
  cmd = { 'repoctx', 'serve', '--stdio' }, -- the server, as a list of arguments
  split = 'botright vsplit', -- how the answer window opens
  budget = nil, -- token budget of the pack (nil: the model's context less a reserve)
  include = nil, -- list of glob patterns
  exclude = nil, -- list of glob patterns
  refresh_on_save = true, -- re-pack after a file of the project is written
  keymap = '<leader>ra', -- visual mode: ask about the selection; false for no mapping
}

M.config = vim.deepcopy(defaults)
M.last_result = nil -- the result of the last answer that finished (for scripts and tests)

local clients = {} -- project root -> client
local last_root = nil
local levels = vim.log.levels

local function notify(message, level)
  vim.notify('repoctx: ' .. message, level or levels.INFO)
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

local function forget(client)
  if clients[client.root] == client then
    clients[client.root] = nil
  end
end

local function client_for(buf)
  local root = project_root(buf or 0)
  last_root = root
  clients[root] = clients[root] or Client.start(root, M.config, forget)
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
  local buf = answer.buffer(M.config.split)
  local started = false
  local function start()
    if not started then
      started = true
      answer.heading(buf, question, context)
    end
  end
  local params = { question = question, conversationId = client.conversation, context = context }
  local id
  id = client:request('ask', params, function(err, result)
    client.streams[id] = nil
    client.asks[id] = nil
    start()
    if err then
      local text = string.format('\n[error %s] %s\n', tostring(err.code), tostring(err.message))
      answer.append(buf, text)
      return
    end
    client.conversation = result.conversationId
    if result.stopReason == 'cancelled' then
      answer.append(buf, '\n[stopped]')
    end
    M.last_result = result
  end)
  client.streams[id] = function(text)
    start()
    answer.append(buf, text)
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
  if first == 0 then
    notify('select some text first', levels.WARN)
    return nil
  end
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

function M.close()
  local client = clients[project_root(0)]
  if client then
    client:close()
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
        client:close()
      end
    end,
  })
  if M.config.keymap then
    vim.keymap.set('x', M.config.keymap, '<Plug>(RepoctxAskSelection)', { remap = true })
  end
end

return M
