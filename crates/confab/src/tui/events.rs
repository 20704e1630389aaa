//! How things from outside change the app: SDK events (messages, receipts,
//! typing, presence, social and group events, reconnects) and the answers
//! to [`Command`]s.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use confab_sdk::{
    Conversation, ConversationId, Event, MessageKind, MessageRecord, ReceiptKind, Seq, ServerEvent,
    TypingState, UserId,
};
use serde_json::Value;

use super::app::{App, Focus, Link, NOTICE_SHOWN, TYPING_IDLE, TYPING_SHOWN};
use super::chat::Chat;
use super::commands::{AppEvent, Command};

impl App {
    /// Handles something that happened outside; returns follow-up work.
    pub fn on_event(&mut self, event: AppEvent) -> Vec<Command> {
        let mut out = Vec::new();
        match event {
            AppEvent::Sdk(e) => self.on_sdk(e, &mut out),
            AppEvent::Tick(now) => self.on_tick(now, &mut out),
            AppEvent::Conversations(list) => self.merge_conversations(list, &mut out),
            AppEvent::History {
                conversation_id,
                page,
            } => {
                if let Some(chat) = self.chat_mut(conversation_id) {
                    chat.loading = false;
                    for m in page.messages {
                        chat.pending.retain(|p| p.client_msg_id != m.client_msg_id);
                        chat.messages.insert(m.seq, m);
                    }
                    chat.more_before = page.has_more;
                }
                if let Some(from) = self.to_decrypt(conversation_id) {
                    out.push(Command::Decrypt {
                        conversation_id,
                        from,
                    });
                }
                let senders: Vec<UserId> = self
                    .chat(conversation_id)
                    .map(|c| c.messages.values().flat_map(named_users).collect())
                    .unwrap_or_default();
                for s in senders {
                    self.want_user(s, &mut out);
                }
                self.mark_read_if_open(conversation_id, &mut out);
            }
            AppEvent::User(user) => {
                self.users.insert(user.id, user);
            }
            AppEvent::Friends(friends) => {
                for f in friends {
                    let online = f.status == confab_sdk::proto::api::PresenceStatus::Online;
                    self.online.insert(f.user.id, online);
                    self.users.insert(f.user.id, f.user);
                }
            }
            AppEvent::FriendRequests(list) => {
                for r in &list {
                    self.users.insert(r.from_user.id, r.from_user.clone());
                }
                self.friend_requests = list;
            }
            AppEvent::Opened(conv, ticket) => {
                let id = conv.id;
                self.upsert(conv, &mut out);
                self.sort_chats();
                // `/dm a` then `/dm b`: b's answer may come first; a's,
                // arriving later, adds a to the list but leaves b open.
                if ticket == self.open_ticket {
                    self.select(id, &mut out);
                    self.focus = Focus::Input;
                }
            }
            AppEvent::ConversationChanged(conv) => {
                self.upsert(conv, &mut out);
            }
            AppEvent::Left(id) => {
                self.chats.retain(|c| c.id() != id);
                if self.selected == Some(id) {
                    self.selected = None;
                    if let Some(first) = self.chats.first().map(Chat::id) {
                        self.select(first, &mut out);
                    }
                }
                self.notice = Some("left the conversation".to_owned());
            }
            AppEvent::Acked {
                client_msg_id,
                result,
            } => self.on_acked(&client_msg_id, result),
            AppEvent::UploadProgress {
                upload_id,
                sent,
                total,
            } => {
                if let Some(u) = self.uploads.iter_mut().find(|u| u.id == upload_id) {
                    u.sent = sent;
                    u.total = total;
                }
            }
            AppEvent::UploadDone { upload_id, result } => {
                let name = self
                    .uploads
                    .iter()
                    .find(|u| u.id == upload_id)
                    .map(|u| u.name.clone())
                    .unwrap_or_default();
                self.uploads.retain(|u| u.id != upload_id);
                match result {
                    Ok(m) => {
                        self.notice = Some(format!("sent {name}"));
                        let id = m.conversation_id;
                        if let Some(chat) = self.chat_mut(id) {
                            chat.messages.insert(m.seq, m);
                        }
                    }
                    Err(e) => self.notice = Some(format!("sending {name} failed: {e}")),
                }
            }
            AppEvent::Messages(list) => {
                for m in list {
                    if let Some(slot) = self
                        .chat_mut(m.conversation_id)
                        .and_then(|c| c.messages.get_mut(&m.seq))
                    {
                        *slot = m;
                    }
                }
            }
            AppEvent::Decrypted {
                conversation_id,
                messages,
            } => {
                if let Some(chat) = self.chat_mut(conversation_id) {
                    for m in messages {
                        chat.decrypted.insert(m.seq, m.content);
                    }
                }
            }
            AppEvent::Notice(text) => self.notice = Some(text),
        }
        out
    }

    /// Where decrypting should start in an encrypted conversation this
    /// device can read: its oldest loaded `encrypted` message not yet
    /// decrypted (`None`: nothing to do).
    fn to_decrypt(&self, id: ConversationId) -> Option<Seq> {
        if !self.e2ee {
            return None;
        }
        let chat = self.chat(id).filter(|c| c.conv.encrypted)?;
        chat.messages
            .values()
            .find(|m| m.kind == MessageKind::Encrypted && !chat.decrypted.contains_key(&m.seq))
            .map(|m| m.seq)
    }

    fn on_acked(&mut self, client_msg_id: &str, result: Result<confab_sdk::Ack, String>) {
        let me = self.me.id;
        for chat in &mut self.chats {
            let Some(i) = chat
                .pending
                .iter()
                .position(|p| p.client_msg_id == client_msg_id)
            else {
                continue;
            };
            match result {
                Ok(ack) => {
                    let p = chat.pending.remove(i);
                    chat.messages
                        .entry(ack.seq)
                        .or_insert_with(|| MessageRecord {
                            conversation_id: ack.conversation_id,
                            seq: ack.seq,
                            sender_id: me,
                            client_msg_id: p.client_msg_id,
                            kind: MessageKind::Text,
                            body: serde_json::json!({ "text": p.text }),
                            ts: ack.ts,
                            read_by: None,
                            edited_at: None,
                            deleted: false,
                            reactions: BTreeMap::new(),
                        });
                }
                Err(e) => {
                    self.notice = Some(format!("message not sent: {e}"));
                    if let Some(p) = chat.pending.get_mut(i) {
                        p.error = Some(e);
                    }
                }
            }
            return;
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Command>) {
        self.now = now;
        if self.notice != self.notice_seen.0 {
            self.notice_seen = (self.notice.clone(), now);
        } else if self.notice.is_some()
            && now.saturating_duration_since(self.notice_seen.1) >= NOTICE_SHOWN
        {
            self.notice = None;
        }
        if let Some((conv, _)) = self.typing_sent {
            if now.saturating_duration_since(self.last_key) >= TYPING_IDLE {
                self.typing_sent = None;
                out.push(Command::Typing {
                    conversation_id: conv,
                    state: TypingState::Stop,
                });
            }
        }
        for chat in &mut self.chats {
            chat.typing.retain(|_, until| *until > now);
        }
    }

    fn on_sdk(&mut self, event: Event, out: &mut Vec<Command>) {
        match event {
            Event::Connected { .. } => self.link = Link::Syncing,
            Event::Disconnected { reason } => self.link = Link::Reconnecting(reason),
            Event::SyncComplete => {
                self.link = Link::Online;
                // After a reconnect, catch up on what changed besides
                // messages (the first time, `start` already asked).
                if std::mem::replace(&mut self.synced_once, true) {
                    out.push(Command::LoadConversations);
                    out.push(Command::LoadFriends);
                    out.push(Command::LoadFriendRequests);
                }
            }
            Event::Message(m) => self.on_message(m, out),
            Event::Receipt {
                conversation_id,
                user_id,
                kind,
                seq,
            } => {
                let me = self.me.id;
                if let Some(chat) = self.chat_mut(conversation_id) {
                    if user_id == me {
                        if kind == ReceiptKind::Read {
                            let unread = chat
                                .messages
                                .range(seq + 1..)
                                .filter(|(_, m)| m.sender_id != me && m.kind != MessageKind::System)
                                .count();
                            chat.unread = chat.unread.min(i64::try_from(unread).unwrap_or(0));
                        }
                    } else {
                        match kind {
                            ReceiptKind::Read => {
                                chat.read_by_others = chat.read_by_others.max(seq);
                                chat.delivered_to_others = chat.delivered_to_others.max(seq);
                            }
                            ReceiptKind::Delivered => {
                                chat.delivered_to_others = chat.delivered_to_others.max(seq);
                            }
                        }
                    }
                }
            }
            Event::Typing {
                conversation_id,
                user_id,
                state,
            } => {
                // My own other devices typing is no news to me.
                if user_id == self.me.id {
                    return;
                }
                let until = self.now + TYPING_SHOWN;
                self.want_user(user_id, out);
                if let Some(chat) = self.chat_mut(conversation_id) {
                    match state {
                        TypingState::Start => {
                            chat.typing.insert(user_id, until);
                        }
                        TypingState::Stop => {
                            chat.typing.remove(&user_id);
                        }
                    }
                }
            }
            Event::Presence {
                user_id, status, ..
            } => {
                self.online
                    .insert(user_id, status == confab_sdk::PresenceStatus::Online);
            }
            Event::ServerEvent(event) => self.on_server_event(event, out),
            Event::Error(e) => self.notice = Some(format!("server: {}", e.message)),
            Event::Call {
                from_user_id,
                signal,
                payload,
                ..
            } => self.on_call(from_user_id, signal, &payload, out),
            Event::Pong { .. } => {}
        }
    }

    fn on_server_event(&mut self, event: ServerEvent, out: &mut Vec<Command>) {
        match event {
            ServerEvent::FriendRequest { request } => {
                let from = request.from_user.username;
                if from != self.me.username {
                    self.notice = Some(format!(
                        "{from} wants to be friends: /accept {from} or /decline {from}"
                    ));
                }
                out.push(Command::LoadFriendRequests);
            }
            ServerEvent::FriendAccepted { friend, .. } => {
                let who = friend.user.username;
                self.notice = Some(format!("you and {who} are friends now"));
                out.push(Command::LoadFriends);
                out.push(Command::LoadFriendRequests);
            }
            ServerEvent::FriendRemoved { user_id } => {
                self.online.remove(&user_id);
                out.push(Command::LoadFriendRequests);
            }
            ServerEvent::ConversationAdded { .. }
            | ServerEvent::GroupCreated { .. }
            | ServerEvent::MemberJoined { .. }
            | ServerEvent::MemberLeft { .. }
            | ServerEvent::ConversationUpdated { .. }
            | ServerEvent::RoleChanged { .. } => out.push(Command::LoadConversations),
            ServerEvent::MessageDeleted {
                conversation_id,
                target_seq,
                ..
            } => {
                if let Some(m) = self.message_mut(conversation_id, target_seq) {
                    m.deleted = true;
                    m.body = Value::Object(serde_json::Map::new());
                    m.reactions.clear();
                }
            }
            ServerEvent::MessageEdited {
                conversation_id,
                edited_at,
                target_seq,
                ..
            } => {
                if let Some(m) = self.message_mut(conversation_id, target_seq) {
                    m.edited_at = Some(edited_at);
                    // The message as it is now (new text) comes from history.
                    out.push(Command::RefreshMessage {
                        conversation_id,
                        seq: target_seq,
                    });
                }
            }
            ServerEvent::ReactionChanged {
                conversation_id,
                target_seq,
                ..
            } => {
                if self.message_mut(conversation_id, target_seq).is_some() {
                    out.push(Command::RefreshMessage {
                        conversation_id,
                        seq: target_seq,
                    });
                }
            }
            // The history line arrives as a message of its own.
            ServerEvent::CallEnded { .. } | ServerEvent::Unknown => {}
        }
    }

    /// Calls ring here too, but this app carries no media: it says who is
    /// calling and where to answer.
    fn on_call(
        &mut self,
        from: UserId,
        signal: confab_sdk::CallSignal,
        payload: &Value,
        out: &mut Vec<Command>,
    ) {
        use confab_sdk::CallSignal;
        match signal {
            CallSignal::Invite => {
                self.want_user(from, out);
                let kind = if payload["media"] == "video" {
                    "video call"
                } else {
                    "call"
                };
                self.notice = Some(format!(
                    "{} is calling you ({kind}): answer in the browser app",
                    self.name(from)
                ));
            }
            CallSignal::Cancel | CallSignal::Hangup
                if self
                    .notice
                    .as_deref()
                    .is_some_and(|n| n.contains("is calling you")) =>
            {
                self.notice = None;
            }
            _ => {}
        }
    }

    /// A message of an open chat this app holds.
    fn message_mut(&mut self, conversation_id: i64, seq: i64) -> Option<&mut MessageRecord> {
        self.chat_mut(conversation_id)
            .and_then(|c| c.messages.get_mut(&seq))
    }

    fn on_message(&mut self, m: MessageRecord, out: &mut Vec<Command>) {
        let me = self.me.id;
        let id = m.conversation_id;
        let from_other = m.sender_id != me && m.kind != MessageKind::System;
        for user in named_users(&m) {
            self.want_user(user, out);
        }
        let open = self.selected == Some(id);
        let self_e2ee = self.e2ee;
        let Some(chat) = self.chat_mut(id) else {
            // A conversation I have not seen yet: fetch the list, ring
            // (unless the list itself has not come yet: this may be old).
            out.push(Command::LoadConversations);
            if from_other && self.list_loaded {
                self.bells += 1;
                out.push(Command::Bell);
            }
            return;
        };
        let muted = chat.conv.muted;
        let decrypt =
            (self_e2ee && chat.conv.encrypted && m.kind == MessageKind::Encrypted).then_some(m.seq);
        let fresh = !chat.messages.contains_key(&m.seq) && m.seq > chat.conv.last_seq;
        chat.typing.remove(&m.sender_id);
        chat.pending.retain(|p| p.client_msg_id != m.client_msg_id);
        chat.conv.last_seq = chat.conv.last_seq.max(m.seq);
        if chat.history_requested || open {
            chat.messages.insert(m.seq, m);
        } else {
            chat.conv.last_message = Some(m);
        }
        if from_other && fresh {
            if !open {
                chat.unread += 1;
                if !muted {
                    self.bells += 1;
                    out.push(Command::Bell);
                }
            }
            self.mark_read_if_open(id, out);
        }
        if let Some(from) = decrypt {
            // Every encrypted message goes through this device's MLS state
            // in seq order, shown or not: commits must be applied as they
            // come.
            out.push(Command::Decrypt {
                conversation_id: id,
                from,
            });
        }
        self.sort_chats();
    }

    /// Moves my read cursor when the open conversation has unread messages.
    pub(crate) fn mark_read_if_open(&mut self, id: ConversationId, out: &mut Vec<Command>) {
        if self.selected != Some(id) {
            return;
        }
        if let Some(chat) = self.chat_mut(id) {
            let last = chat.last_seq();
            if last > chat.conv.read_seq {
                chat.conv.read_seq = last;
                chat.unread = 0;
                out.push(Command::MarkRead {
                    conversation_id: id,
                    seq: last,
                });
            }
        }
    }

    fn upsert(&mut self, conv: Conversation, out: &mut Vec<Command>) {
        let me = self.me.id;
        let selected = self.selected == Some(conv.id);
        match self.chat_mut(conv.id) {
            Some(chat) => {
                let last_seq = chat.conv.last_seq.max(conv.last_seq);
                let read_seq = chat.conv.read_seq.max(conv.read_seq);
                for m in conv.members.iter().filter(|m| m.user_id != me) {
                    chat.read_by_others = chat.read_by_others.max(m.read_seq);
                    chat.delivered_to_others = chat.delivered_to_others.max(m.read_seq);
                }
                if !selected && !chat.history_requested {
                    chat.unread = conv.unread_count;
                }
                chat.conv = conv;
                chat.conv.last_seq = last_seq;
                chat.conv.read_seq = read_seq;
            }
            None => self.chats.push(Chat::new(conv, me)),
        }
        let peers: Vec<UserId> = self
            .chats
            .iter()
            .filter_map(|c| c.peer(me))
            .collect::<Vec<_>>();
        for p in peers {
            self.want_user(p, out);
        }
    }

    fn merge_conversations(&mut self, list: Vec<Conversation>, out: &mut Vec<Command>) {
        self.list_loaded = true;
        let ids: HashSet<ConversationId> = list.iter().map(|c| c.id).collect();
        for conv in list {
            self.upsert(conv, out);
        }
        self.chats.retain(|c| ids.contains(&c.id()));
        self.sort_chats();
        let still_there = self.selected.is_some_and(|id| ids.contains(&id));
        if !still_there {
            self.selected = None;
            if let Some(first) = self.chats.first().map(Chat::id) {
                self.select(first, out);
            }
        } else if let Some(id) = self.selected {
            self.mark_read_if_open(id, out);
        }
    }

    fn sort_chats(&mut self) {
        self.chats
            .sort_by_key(|c| (std::cmp::Reverse(c.activity()), c.id()));
    }
}

/// Everyone a message names: its sender, and for a system notice the users
/// it is about.
fn named_users(m: &MessageRecord) -> Vec<UserId> {
    let mut users = vec![m.sender_id];
    if m.kind == MessageKind::System {
        for key in ["user_id", "by_user_id"] {
            users.extend(m.body.get(key).and_then(Value::as_i64));
        }
        if let Some(ids) = m.body.get("user_ids").and_then(Value::as_array) {
            users.extend(ids.iter().filter_map(Value::as_i64));
        }
    }
    users
}
