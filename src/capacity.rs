//! Capacity arithmetic (pure).
