//! Placeholder: the registry CLI (server add|list|remove|rotate-token).
