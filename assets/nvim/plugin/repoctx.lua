-- Commands of the repoctx plugin; the work is in lua/repoctx/init.lua. Mappings and the
-- save hook come with require('repoctx').setup{}.
if vim.g.loaded_repoctx then
  return
end
vim.g.loaded_repoctx = 1

local function command(name, fn, opts)
  vim.api.nvim_create_user_command(name, fn, opts or {})
end

command('RepoctxAsk', function(opts)
  require('repoctx').ask_command(opts)
end, { nargs = '+', range = true, desc = 'Ask repoctx; with a range, about those lines' })
command('RepoctxStop', function()
  require('repoctx').stop()
end, { desc = 'Stop the answer being written' })
command('RepoctxNew', function()
  require('repoctx').new_conversation()
end, { desc = 'Start a new conversation with the next question' })
command('RepoctxRefresh', function()
  require('repoctx').refresh()
end, { desc = 'Re-pack the project from the files on disk' })
command('RepoctxConversations', function()
  require('repoctx').conversations()
end, { desc = 'Pick a conversation to continue' })
command('RepoctxStatus', function()
  require('repoctx').status()
end, { desc = 'Show the pack of this project' })
command('RepoctxClose', function()
  require('repoctx').close()
end, { desc = "Stop this project's server" })

vim.keymap.set('x', '<Plug>(RepoctxAskSelection)', function()
  -- leave visual mode first so that the '< and '> marks hold this selection
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('<Esc>', true, false, true), 'nx', false)
  require('repoctx').ask_selection()
end, { desc = 'Ask repoctx about the selection' })
