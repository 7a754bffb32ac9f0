"""LSP's networks, one file each."""
