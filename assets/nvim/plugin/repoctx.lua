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

-- ':' leaves visual mode (setting the '< and '> marks), <C-u> drops the range it inserts
local ask_selection = ":<C-u>lua require('repoctx').ask_selection()<CR>"
vim.keymap.set('x', '<Plug>(RepoctxAskSelection)', ask_selection,
  { silent = true, desc = 'Ask repoctx about the selection' })
