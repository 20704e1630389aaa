//! Confab's integration tests, one binary: the real server (in-process on
//! port 0, or the `confab` binary as a child process), the SDK, the CLI, the
//! terminal and browser apps, the deployment files. Helpers shared by the
//! modules live once in `support`.

mod support;

mod abuse;
mod accounts;
mod bad_input;
mod browser;
mod calls;
mod cli;
mod cluster;
mod compression;
mod crash;
mod delivery;
mod deploy;
mod e2ee;
mod friends;
mod groups;
mod media;
mod messages;
mod names;
mod oidc;
mod openapi;
mod operations;
mod p2p;
mod presence;
mod security;
mod tls;
mod tui;
mod tui_p2p;
