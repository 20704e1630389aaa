//! Publishing frames through the bus: the one place that builds a
//! delivery's error handling, and `event` frames (`friend_request`,
//! `friend_accepted`, `conversation_added`, …).

use std::sync::Arc;

use confab_bus::{Bus, Delivery, Priority};
use confab_proto::{Event, ServerFrame, UserId};

/// Publishes a delivery. A failure is logged and otherwise ignored: what
/// was committed reaches its recipients by sync, and ephemeral frames
/// (typing, presence, events also visible through the API) are best effort.
pub async fn send(bus: &dyn Bus, delivery: Delivery) {
    if let Err(e) = bus.publish(delivery).await {
        tracing::warn!(error = %e, "publish failed; committed data is caught up by sync");
    }
}

/// Sends an `event` frame to `users`.
pub async fn publish(bus: &dyn Bus, users: Arc<[UserId]>, event: Event) {
    let frame = ServerFrame::Event(event);
    send(bus, Delivery::to(users, Priority::Control, frame.encode())).await;
}
