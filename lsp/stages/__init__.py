"""LSP's training stages, one LightningModule each."""
