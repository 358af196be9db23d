//! Placeholder: the server registry and its state file.
