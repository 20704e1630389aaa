//! Receiving from a [`Connection`]: the next event, helpers that wait for
//! a kind of event with a timeout (handy in tests), and a `Stream`.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use confab_proto::{ConversationId, MessageRecord, Seq};
use tokio::time::Instant;

use crate::connection::{Connection, ConnectionHandle};
use crate::error::{Error, Result};
use crate::event::Event;

impl Connection {
    /// The next event; `None` once the connection is closed and every
    /// event was read.
    pub async fn next_event(&mut self) -> Option<Event> {
        let event = self.events.recv().await?;
        self.note(&event);
        Some(event)
    }

    /// The next event within `timeout`: [`Error::Timeout`] if none came,
    /// [`Error::Closed`] if the connection is closed.
    pub async fn next_event_within(&mut self, timeout: Duration) -> Result<Event> {
        match tokio::time::timeout(timeout, self.next_event()).await {
            Err(_) => Err(Error::Timeout),
            Ok(None) => Err(Error::Closed),
            Ok(Some(e)) => Ok(e),
        }
    }

    /// Waits up to `timeout` in all for an event that `matches`, discarding
    /// the events before it.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut matches: impl FnMut(&Event) -> bool,
    ) -> Result<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.next_event_within(left).await?;
            if matches(&event) {
                return Ok(event);
            }
        }
    }

    /// The next message within `timeout`, discarding other events.
    pub async fn next_message(&mut self, timeout: Duration) -> Result<MessageRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Event::Message(m) = self.next_event_within(left).await? {
                return Ok(m);
            }
        }
    }

    /// The next `n` messages, all within `timeout`, discarding other events.
    pub async fn next_messages(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<MessageRecord>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            out.push(self.next_message(left).await?);
        }
        Ok(out)
    }

    /// Waits for [`Event::Connected`] (discarding events before it).
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<()> {
        self.wait_for(timeout, |e| matches!(e, Event::Connected { .. }))
            .await
            .map(drop)
    }

    /// Waits for [`Event::SyncComplete`] (discarding events before it).
    pub async fn wait_synced(&mut self, timeout: Duration) -> Result<()> {
        self.wait_for(timeout, |e| matches!(e, Event::SyncComplete))
            .await
            .map(drop)
    }

    /// The highest seq handed to the application per conversation (through
    /// [`Connection::next_event`] or the stream): save it and pass it as
    /// [`ConnectOptions::cursors`](crate::ConnectOptions::cursors) next time.
    pub fn cursors(&self) -> HashMap<ConversationId, Seq> {
        self.cursors.clone()
    }

    /// A handle to send from other tasks while this one reads events.
    pub fn handle(&self) -> ConnectionHandle {
        self.handle.clone()
    }

    fn note(&mut self, event: &Event) {
        if let Event::Message(m) = event {
            let cursor = self.cursors.entry(m.conversation_id).or_insert(0);
            *cursor = (*cursor).max(m.seq);
        }
    }
}

impl futures_util::Stream for Connection {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = &mut *self;
        let polled = this.events.poll_recv(cx);
        if let Poll::Ready(Some(event)) = &polled {
            this.note(event);
        }
        polled
    }
}
