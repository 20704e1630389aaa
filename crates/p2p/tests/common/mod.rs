//! Helpers the node tests share: real nodes on 127.0.0.1 with mDNS off.

use std::time::Duration;

use confab_p2p::node::{Event, Node, NodeConfig};
use confab_p2p::store::Contact;
use tokio::sync::broadcast;

pub const WAIT: Duration = Duration::from_secs(20);

pub async fn start(dir: &std::path::Path, name: &str) -> Node {
    let mut config = NodeConfig::new(dir);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")];
    config.mdns = false;
    config.name = Some(name.into());
    Node::start(config).await.expect("start")
}

pub async fn contact_of(node: &Node, name: &str) -> Contact {
    let addrs = node.listening(WAIT).await.expect("listening");
    Contact {
        peer_id: node.peer_id().to_base58(),
        name: name.into(),
        addrs: addrs.iter().map(|a| a.to_string()).collect(),
        relay: None,
    }
}

pub async fn next_message(rx: &mut broadcast::Receiver<Event>, text: &str) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::Message { message }) = rx.recv().await {
                if message.body.contains(text) {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("message {text:?} did not arrive"));
}
