//! The in-process bus of a single node: publish hands the delivery straight
//! to the local sink.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use confab_proto::UserId;

use crate::{Bus, BusError, Delivery, DeliverySink};

/// Single-node bus. Interest needs no bookkeeping: the sink knows which
/// users have connections here.
#[derive(Default)]
pub struct LocalBus {
    sink: OnceLock<Arc<dyn DeliverySink>>,
}

impl LocalBus {
    /// A bus with no sink yet.
    pub fn new() -> LocalBus {
        LocalBus::default()
    }
}

#[async_trait]
impl Bus for LocalBus {
    fn attach(&self, sink: Arc<dyn DeliverySink>) {
        // A second attach is a programming error; keep the first sink.
        let _ = self.sink.set(sink);
    }

    async fn publish(&self, delivery: Delivery) -> Result<(), BusError> {
        match self.sink.get() {
            Some(sink) => {
                sink.deliver(&delivery);
                Ok(())
            }
            None => Err(BusError::Unavailable("no sink attached".into())),
        }
    }

    async fn set_interest(&self, _user: UserId, _interested: bool) -> Result<(), BusError> {
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.sink.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;

    use super::*;
    use crate::Priority;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Bytes>>);

    impl DeliverySink for Recorder {
        fn deliver(&self, d: &Delivery) {
            self.0.lock().expect("lock").push(d.frame.clone());
        }
    }

    #[tokio::test]
    async fn publish_reaches_the_sink_in_order() {
        let bus = LocalBus::new();
        let d = |s: &'static str| Delivery {
            users: Arc::from(vec![1]),
            skip_user: None,
            skip_connection: None,
            priority: Priority::Message,
            frame: Bytes::from_static(s.as_bytes()),
        };
        assert!(bus.publish(d("early")).await.is_err());
        let rec = Arc::new(Recorder::default());
        bus.attach(rec.clone());
        assert!(bus.is_ready());
        bus.publish(d("a")).await.expect("publish");
        bus.publish(d("b")).await.expect("publish");
        assert_eq!(
            *rec.0.lock().expect("lock"),
            vec![Bytes::from("a"), Bytes::from("b")]
        );
    }
}
