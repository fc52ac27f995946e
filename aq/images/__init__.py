"""Alpine images: release discovery, verified download, base install, the catalog."""
