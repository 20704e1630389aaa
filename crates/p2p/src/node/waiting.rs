//! Encrypted messages to a contact whose keys are not there yet: an
//! encrypted direct conversation starts with the contact's MLS KeyPackage,
//! which only the contact itself hands out (`/confab/kp/1`). When it is
//! offline, the message is kept in the store ([`WaitingSend`]) and sent
//! encrypted, in the order written, as soon as the contact connects; never
//! in the clear.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;

use super::{Event, Node, NodeError, NodeInner};
use crate::envelope::Envelope;
use crate::store::WaitingSend;

/// How often waiting messages of connected contacts are tried again, in
/// case a connection event was missed or a KeyPackage request failed.
const RETRY_EVERY: Duration = Duration::from_secs(15);

/// How long a connection gets to hand over the contact's KeyPackage (it may
/// be refused for a few seconds: a peer gives one KeyPackage per 5 s).
const CONNECT_WAIT: Duration = Duration::from_secs(8);

/// What [`Node::send_encrypted_to_contact`] did.
#[derive(Debug, Clone)]
pub enum EncryptedSend {
    /// Encrypted and queued to the contact.
    Sent(Envelope),
    /// Kept until the contact's keys come (it is offline).
    Waiting {
        /// The encrypted direct conversation.
        conversation_id: String,
        /// The message's id; it keeps it when it is sent.
        client_msg_id: String,
        /// Why it waits.
        reason: String,
    },
}

impl Node {
    /// Sends a message (`kind`, `body` as JSON text) encrypted to a
    /// contact (name or PeerId). Without the conversation's keys yet, the
    /// contact's KeyPackage is asked for up to `wait`; if it does not
    /// come, the message waits in the store and is sent encrypted when the
    /// contact connects ([`Event::WaitingSent`]). Messages written earlier
    /// and still waiting go first.
    pub async fn send_encrypted_to_contact(
        &self,
        contact: &str,
        kind: &str,
        body: String,
        wait: Duration,
    ) -> Result<EncryptedSend, NodeError> {
        let who = contact.to_owned();
        let client_msg_id = uuid::Uuid::new_v4().to_string();
        let id = client_msg_id.clone();
        let kind = kind.to_owned();
        let (peer, conv) = self
            .inner
            .store
            .call(move |s| {
                let peer = s.find_contact(&who)?.peer_id;
                let conv = s.encrypted_direct(&peer)?;
                s.queue_waiting(&conv, &peer, &kind, &body, &id)?;
                Ok((peer, conv))
            })
            .await?;
        let (sent, reason) = self.send_waiting(&peer, wait).await?;
        let mut found = sent.into_iter().find(|e| e.client_msg_id == client_msg_id);
        if found.is_none() {
            // The retry task may have sent it first (the contact connected).
            let id = client_msg_id.clone();
            found = self.inner.store.call(move |s| s.own_envelope(&id)).await?;
        }
        match found {
            Some(env) => Ok(EncryptedSend::Sent(env)),
            None => Ok(EncryptedSend::Waiting {
                conversation_id: conv,
                client_msg_id,
                reason: reason.unwrap_or_else(|| "waiting for keys".into()),
            }),
        }
    }

    /// [`Node::create_encrypted_group`], asking again for up to `wait`
    /// while a member's keys do not come (it is still connecting, or gave
    /// a KeyPackage less than 5 s ago).
    pub async fn create_encrypted_group_within(
        &self,
        title: &str,
        members: Vec<String>,
        wait: Duration,
    ) -> Result<String, NodeError> {
        let started = Instant::now();
        loop {
            match self.create_encrypted_group(title, members.clone()).await {
                Err(e)
                    if started.elapsed() < wait && e.to_string().contains("waiting for keys") =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                done => return done,
            }
        }
    }

    /// Messages still waiting for keys (all contacts), oldest first.
    pub async fn waiting_sends(&self) -> Result<Vec<WaitingSend>, NodeError> {
        Ok(self.inner.store.call(|s| s.waiting_sends(None)).await?)
    }

    /// Sends what waits for `peer`'s keys, asking for its KeyPackage up to
    /// `wait` if the conversation has no group yet. Answers the envelopes
    /// sent, and why nothing could be sent (if so).
    async fn send_waiting(
        &self,
        peer: &str,
        wait: Duration,
    ) -> Result<(Vec<Envelope>, Option<String>), NodeError> {
        let _one = self.inner.waiting.lock().await;
        let who = peer.to_owned();
        let waiting = self
            .inner
            .store
            .call(move |s| s.waiting_sends(Some(&who)))
            .await?;
        let Some(first) = waiting.first() else {
            return Ok((Vec::new(), None));
        };
        let started = Instant::now();
        loop {
            match self.encrypted_conversation(peer).await {
                Ok(_) => break,
                Err(e) if e.to_string().contains("waiting for keys") => {
                    if started.elapsed() >= wait {
                        return Ok((Vec::new(), Some(e.to_string())));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
        debug_assert!(waiting
            .iter()
            .all(|w| w.conversation_id == first.conversation_id));
        let key = self.inner.key.clone();
        let sent = self
            .inner
            .store
            .call(move |s| {
                waiting
                    .iter()
                    .map(|w| s.send_waiting(&key, w))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        self.flush().await?;
        for env in &sent {
            self.announce_sent(env);
            let _ = self.inner.events.send(Event::WaitingSent {
                peer: peer.to_owned(),
                conversation_id: env.conversation_id.clone(),
                client_msg_id: env.client_msg_id.clone(),
            });
        }
        Ok((sent, None))
    }
}

/// Starts the task that sends waiting messages when their contact
/// connects (and every [`RETRY_EVERY`] for connected ones). It holds the
/// node weakly: it ends with the node.
pub(super) fn spawn_retry(node: &Node) {
    let weak: Weak<NodeInner> = Arc::downgrade(&node.inner);
    let mut events = node.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETRY_EVERY);
        tick.tick().await;
        loop {
            let peers: Vec<(String, Duration)> = tokio::select! {
                ev = events.recv() => match ev {
                    Ok(Event::Connected { peer, .. }) => vec![(peer, CONNECT_WAIT)],
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let Some(inner) = weak.upgrade() else { return };
                    let node = Node { inner };
                    let Ok(waiting) = node.waiting_sends().await else { continue };
                    let mut peers: Vec<String> = waiting.into_iter().map(|w| w.peer).collect();
                    peers.sort();
                    peers.dedup();
                    peers.into_iter().map(|p| (p, Duration::ZERO)).collect()
                }
            };
            for (peer, wait) in peers {
                let Some(inner) = weak.upgrade() else { return };
                let node = Node { inner };
                match node.send_waiting(&peer, wait).await {
                    Ok(_) => {}
                    Err(NodeError::Stopped) => return,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "sending messages that waited for keys")
                    }
                }
            }
        }
    });
}
