"""``repoctx serve --stdio``: JSON-RPC 2.0 for editors."""
