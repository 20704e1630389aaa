//! The confab library target: the terminal chat app behind `confab chat`,
//! a library so the integration tests can drive it.

pub mod tui;
