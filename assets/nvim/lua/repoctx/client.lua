-- One `repoctx serve --stdio` process: line-delimited JSON-RPC over the job's pipes.

local M = {}

local levels = vim.log.levels

local function notify(message, level)
  vim.notify('repoctx: ' .. message, level or levels.INFO)
end

local function is_null(value)
  return value == nil or value == vim.NIL
end

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

function Client:on_stderr(data)
  for _, line in ipairs(data) do
    if line ~= '' then
      table.insert(self.stderr, line)
      if #self.stderr > 50 then
        table.remove(self.stderr, 1)
      end
    end
  end
end

function Client:on_exit(code)
  self.exited = true
  if self.on_gone then
    self.on_gone(self)
  end
  for id, callback in pairs(self.callbacks) do
    self.callbacks[id] = nil
    callback({ code = -1, message = 'the server exited' }, nil)
  end
  if code ~= 0 and not self.closing then
    local detail = table.concat(self.stderr, '\n'):gsub('%s+$', '')
    local text = string.format('the server exited with code %d\n%s', code, detail:sub(-2000))
    notify(text, levels.ERROR)
  end
end

-- Starts the server for `root` and opens the project: `config` holds `cmd`, `budget`,
-- `include` and `exclude`; `on_gone(client)` is called when the process exits.
function M.start(root, config, on_gone)
  local self = setmetatable({
    root = root, next_id = 0, callbacks = {}, streams = {}, partial = '', stderr = {},
    asks = {}, conversation = nil, stats = nil, progress = nil, closing = false,
    exited = false, on_gone = on_gone,
  }, Client)
  local ok, job = pcall(vim.fn.jobstart, config.cmd, {
    cwd = root,
    stdin = 'pipe',
    on_stdout = function(_, data) self:on_stdout(data) end,
    on_stderr = function(_, data) self:on_stderr(data) end,
    on_exit = function(_, code) self:on_exit(code) end,
  })
  if not ok or type(job) ~= 'number' or job <= 0 then
    notify('cannot start ' .. table.concat(config.cmd, ' ') .. ' (' .. tostring(job) ..
      '); set the command with require("repoctx").setup{ cmd = {...} }', levels.ERROR)
    return nil
  end
  self.job = job
  self:request('initialize', { protocolVersion = 1, clientInfo = { name = 'repoctx.nvim' } },
    function(err)
      if err then notify('initialize failed: ' .. tostring(err.message), levels.ERROR) end
    end)
  local params = { roots = { root }, budget = config.budget, include = config.include,
    exclude = config.exclude }
  self:request('context/open', params, function(err, result)
    if err then
      notify('cannot open ' .. root .. ': ' .. tostring(err.message), levels.ERROR)
    else
      self.stats = result
    end
  end)
  return self
end

-- Asks the server to shut down and exit.
function Client:close()
  self.closing = true
  if not self.exited then
    self:request('shutdown', nil, function() end)
    self:notify_server('exit')
  end
end

return M
