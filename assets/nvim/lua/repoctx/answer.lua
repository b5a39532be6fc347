-- The answer buffer, `repoctx://answer`: a scratch buffer shown in a split, where answers are
-- appended as they stream.

local M = {}

M.NAME = 'repoctx://answer'

-- `text` cut at each newline (the pieces, empty ones included).
function M.split_lines(text)
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

local function find_buffer()
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_valid(buf) and vim.api.nvim_buf_get_name(buf) == M.NAME then
      return buf
    end
  end
  return nil
end

-- The buffer, created when missing and opened with `split` when no window shows it.
function M.buffer(split)
  local buf = find_buffer()
  if not buf then
    buf = vim.api.nvim_create_buf(false, true)
    vim.api.nvim_buf_set_name(buf, M.NAME)
    vim.api.nvim_buf_set_option(buf, 'filetype', 'markdown')
  end
  if vim.fn.bufwinid(buf) == -1 then
    local previous = vim.api.nvim_get_current_win()
    vim.cmd(split)
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
function M.append(buf, text)
  if not vim.api.nvim_buf_is_valid(buf) then
    return
  end
  local last = vim.api.nvim_buf_line_count(buf)
  local tail = vim.api.nvim_buf_get_lines(buf, last - 1, last, false)[1] or ''
  local parts = M.split_lines(text)
  parts[1] = tail .. parts[1]
  vim.api.nvim_buf_set_lines(buf, last - 1, last, false, parts)
  scroll_to_end(buf)
end

function M.heading(buf, question, context)
  local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  local empty = #lines == 1 and lines[1] == ''
  local heading = '## ' .. M.split_lines(question)[1]
  local block = { heading }
  if context and context.selection and context.path then
    local first, last = context.startLine, context.endLine
    local lines = first == last and ('line ' .. first) or string.format('lines %d-%d', first, last)
    table.insert(block, string.format('_(selection of %s, %s)_',
      vim.fn.fnamemodify(context.path, ':~:.'), lines))
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

return M
