//! `event` frames (`friend_request`, `friend_accepted`, …) sent through the
//! bus to every connected device of some users.

use std::sync::Arc;

use bytes::Bytes;
use confab_bus::{Bus, Delivery, Priority};
use confab_proto::{ServerFrame, UserId};
use serde_json::Value;

/// Sends `event` with the fields of `data` (an object) to `users`.
pub async fn publish(bus: &dyn Bus, users: Arc<[UserId]>, event: &str, data: Value) {
    let data = match data {
        Value::Object(map) => map,
        other => {
            let mut map = serde_json::Map::new();
            map.insert("data".into(), other);
            map
        }
    };
    let frame = ServerFrame::Event {
        event: event.to_owned(),
        data,
    };
    let delivery = Delivery {
        users,
        skip_user: None,
        skip_connection: None,
        priority: Priority::Control,
        frame: Bytes::from(frame.encode()),
    };
    if let Err(e) = bus.publish(delivery).await {
        // Events are also visible by polling the API (requests, members),
        // so a lost one is a delay, not a loss.
        tracing::warn!(error = %e, event, "could not publish event");
    }
}
