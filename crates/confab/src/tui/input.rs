//! Keys, mouse and the input line's slash commands, turned into state
//! changes and [`Command`]s.

use std::path::PathBuf;

use ratatui::crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind,
};

use super::app::{App, Focus, Overlay, PAGE};
use super::commands::Command;

/// The key bindings and commands, as shown by `?`.
pub const HELP: &[(&str, &str)] = &[
    ("Enter", "send the message / run the /command"),
    ("Tab", "move focus: conversation list <-> input"),
    ("Up/Down", "choose the conversation (Alt-Up/Down too)"),
    ("PgUp/PgDn", "scroll history (older pages load at the top)"),
    ("? or F1", "this help (? when the input is empty)"),
    ("Esc", "close this help / clear the notice"),
    ("Ctrl-C", "quit"),
    ("/dm USER", "open the direct chat with USER"),
    (
        "/group TITLE USER..",
        "new group (quote a TITLE with spaces)",
    ),
    (
        "/dm or /group .. -e",
        "the same, end-to-end encrypted (--encrypted)",
    ),
    ("/add USER  /kick USER", "add to / remove from this group"),
    ("/leave", "leave this group"),
    ("/friend USER", "send a friend request"),
    ("/accept [USER]", "accept a friend request"),
    ("/decline [USER]", "decline a friend request"),
    ("/file PATH", "send a file (images show as images)"),
    ("/mute  /unmute", "silence this conversation's bell"),
    ("/quit", "quit"),
    ("//text", "send text that starts with /"),
    ("", "times are shown in UTC"),
];

impl App {
    /// Handles a terminal event (key, mouse, resize).
    pub fn on_terminal(&mut self, event: TermEvent) -> Vec<Command> {
        match event {
            TermEvent::Key(key) => self.on_key(key),
            TermEvent::Mouse(m) => {
                let mut out = Vec::new();
                if self.overlay.is_some() {
                    return out;
                }
                match m.kind {
                    MouseEventKind::ScrollUp => self.scroll(true, 3, &mut out),
                    MouseEventKind::ScrollDown => self.scroll(false, 3, &mut out),
                    MouseEventKind::Down(MouseButton::Left) => {
                        self.click(m.column, m.row, &mut out)
                    }
                    _ => {}
                }
                out
            }
            TermEvent::Paste(text) => {
                let mut out = Vec::new();
                if self.focus == Focus::Input && self.overlay.is_none() {
                    for c in text.chars().filter(|c| !c.is_control()) {
                        self.insert(c);
                    }
                    self.typed(&mut out);
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// Handles one key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let mut out = Vec::new();
        if key.kind == KeyEventKind::Release {
            return out;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d')) {
            self.stop_typing(&mut out);
            self.quit = true;
            out.push(Command::Quit);
            return out;
        }
        if self.overlay.is_some() {
            if matches!(
                key.code,
                KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::F(1)
            ) {
                self.overlay = None;
            }
            return out;
        }
        match key.code {
            KeyCode::F(1) => self.overlay = Some(Overlay::Help),
            KeyCode::Char('?') if self.focus == Focus::List || self.input.is_empty() => {
                self.overlay = Some(Overlay::Help)
            }
            KeyCode::Esc => self.notice = None,
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::List => Focus::Input,
                    Focus::Input => Focus::List,
                }
            }
            KeyCode::PageUp => self.scroll(true, PAGE, &mut out),
            KeyCode::PageDown => self.scroll(false, PAGE, &mut out),
            KeyCode::Up if alt || self.focus == Focus::Input => self.move_selection(-1, &mut out),
            KeyCode::Down if alt || self.focus == Focus::Input => self.move_selection(1, &mut out),
            _ if self.focus == Focus::List => match key.code {
                KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1, &mut out),
                KeyCode::Down | KeyCode::Char('j') => self.move_selection(1, &mut out),
                KeyCode::Enter => self.focus = Focus::Input,
                // Typing anything else goes to the input line.
                KeyCode::Char(c) if !ctrl && !alt => {
                    self.focus = Focus::Input;
                    self.insert(c);
                    self.typed(&mut out);
                }
                _ => {}
            },
            KeyCode::Enter => self.submit(&mut out),
            KeyCode::Char('u') if ctrl => {
                self.input.clear();
                self.cursor = 0;
                self.typed(&mut out);
            }
            KeyCode::Char(c) if !ctrl && !alt => {
                self.insert(c);
                self.typed(&mut out);
            }
            KeyCode::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                let at = self.byte_at(self.cursor);
                self.input.remove(at);
                self.typed(&mut out);
            }
            KeyCode::Delete if self.cursor < self.input.chars().count() => {
                let at = self.byte_at(self.cursor);
                self.input.remove(at);
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.input.chars().count()),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.input.chars().count(),
            _ => {}
        }
        out
    }

    fn byte_at(&self, chars: usize) -> usize {
        self.input
            .char_indices()
            .nth(chars)
            .map_or(self.input.len(), |(i, _)| i)
    }

    fn insert(&mut self, c: char) {
        let at = self.byte_at(self.cursor);
        self.input.insert(at, c);
        self.cursor += 1;
    }

    fn move_selection(&mut self, delta: isize, out: &mut Vec<Command>) {
        if self.chats.is_empty() {
            return;
        }
        let current = self
            .selected
            .and_then(|id| self.chats.iter().position(|c| c.id() == id));
        let next = match current {
            Some(i) => i
                .saturating_add_signed(delta)
                .min(self.chats.len().saturating_sub(1)),
            None => 0,
        };
        if let Some(id) = self.chats.get(next).map(|c| c.id()) {
            self.select(id, out);
        }
    }

    fn submit(&mut self, out: &mut Vec<Command>) {
        let line = std::mem::take(&mut self.input);
        self.cursor = 0;
        let text = line.trim();
        if text.is_empty() {
            return;
        }
        if let Some(rest) = text.strip_prefix("//") {
            self.send_text(format!("/{rest}"), out);
        } else if let Some(cmd) = text.strip_prefix('/') {
            self.run_slash(cmd, out);
        } else {
            self.send_text(text.to_owned(), out);
        }
    }

    fn run_slash(&mut self, line: &str, out: &mut Vec<Command>) {
        let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let (rest, encrypted) = encrypted_flag(rest.trim());
        let rest = rest.as_str();
        let args: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
        let group = self
            .selected
            .filter(|_| self.selected().is_some_and(|c| !c.is_direct()));
        let usage = |u: &str| Some(format!("usage: {u}"));
        match (name, args.as_slice()) {
            ("dm" | "msg", [user]) => {
                self.open_ticket += 1;
                out.push(Command::OpenDirect {
                    username: user.clone(),
                    encrypted,
                    ticket: self.open_ticket,
                });
            }
            ("dm" | "msg", _) => self.notice = usage("/dm USER"),
            ("group", _) => match split_title(rest) {
                Some((title, users)) if !users.is_empty() => {
                    self.open_ticket += 1;
                    out.push(Command::CreateGroup {
                        title,
                        usernames: users,
                        encrypted,
                        ticket: self.open_ticket,
                    });
                }
                _ => self.notice = usage("/group TITLE USER..."),
            },
            ("add" | "kick", users) if !users.is_empty() => match group {
                Some(id) => {
                    let encrypted = self.is_encrypted(id);
                    for u in users {
                        out.push(if name == "add" {
                            Command::AddMember {
                                conversation_id: id,
                                username: u.clone(),
                                encrypted,
                            }
                        } else {
                            Command::RemoveMember {
                                conversation_id: id,
                                username: u.clone(),
                                encrypted,
                            }
                        });
                    }
                }
                None => self.notice = Some("open a group first".to_owned()),
            },
            ("add" | "kick", _) => self.notice = usage(&format!("/{name} USER")),
            ("leave", []) => match group {
                Some(id) => out.push(Command::Leave(id)),
                None => self.notice = Some("only groups can be left".to_owned()),
            },
            ("friend", [user]) => out.push(Command::SendFriendRequest {
                username: user.clone(),
            }),
            ("friend", _) => self.notice = usage("/friend USER"),
            ("accept" | "decline", who) if who.len() <= 1 => {
                let found = self
                    .friend_requests
                    .iter()
                    .find(|r| {
                        who.first()
                            .is_none_or(|u| r.from_user.username.eq_ignore_ascii_case(u))
                    })
                    .map(|r| r.id);
                match found {
                    Some(id) if name == "accept" => out.push(Command::AcceptFriendRequest(id)),
                    Some(id) => out.push(Command::DeclineFriendRequest(id)),
                    None => self.notice = Some("no such friend request".to_owned()),
                }
            }
            ("file", _) if !rest.is_empty() => self.send_file(expand_home(rest), out),
            ("file", _) => self.notice = usage("/file PATH"),
            ("mute" | "unmute", []) => match self.selected {
                Some(id) => out.push(Command::SetMuted {
                    conversation_id: id,
                    muted: name == "mute",
                }),
                None => self.notice = Some("no conversation open".to_owned()),
            },
            ("help", _) => self.overlay = Some(Overlay::Help),
            ("quit" | "q", _) => {
                self.stop_typing(out);
                self.quit = true;
                out.push(Command::Quit);
            }
            _ => self.notice = Some(format!("unknown command /{name}: press ? for help")),
        }
    }
}

/// The arguments without `-e` / `--encrypted` (a word of its own,
/// anywhere), and whether it was there.
fn encrypted_flag(rest: &str) -> (String, bool) {
    let is_flag = |w: &str| w == "-e" || w == "--encrypted";
    if !rest.split_whitespace().any(is_flag) {
        return (rest.to_owned(), false);
    }
    let kept: Vec<&str> = rest.split(' ').filter(|w| !is_flag(w)).collect();
    (kept.join(" ").trim().to_owned(), true)
}

/// `"Title with spaces" ann bob` or `Title ann bob` into the title and the
/// usernames.
fn split_title(rest: &str) -> Option<(String, Vec<String>)> {
    let (title, users) = if let Some(quoted) = rest.strip_prefix('"') {
        let (title, after) = quoted.split_once('"')?;
        (title.to_owned(), after)
    } else {
        let (title, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        (title.to_owned(), after)
    };
    if title.trim().is_empty() {
        return None;
    }
    Some((
        title.trim().to_owned(),
        users.split_whitespace().map(str::to_owned).collect(),
    ))
}

fn expand_home(path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        if let Some(home) = dirs::home_dir() {
            return home.join(rest);
        }
    }
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_titles() {
        assert_eq!(
            split_title("\"Team chat\" ann bob"),
            Some(("Team chat".into(), vec!["ann".into(), "bob".into()]))
        );
        assert_eq!(
            split_title("team ann"),
            Some(("team".into(), vec!["ann".into()]))
        );
        assert_eq!(split_title("\"\" ann"), None);
        assert_eq!(split_title("\"open"), None);
    }
}
