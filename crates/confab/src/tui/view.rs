//! Drawing the app: conversation list, message pane, typing line, uploads,
//! input line, status line and the help overlay. Reads the state; the only
//! thing it writes down is where clickable things landed.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Gauge, Paragraph};
use ratatui::Frame;
use unicode_width::UnicodeWidthChar;

use super::app::{App, Clickable, Focus, Link, Overlay};
use super::chat::{Chat, Pending, Tick};
use super::format;
use super::input::HELP;
use confab_sdk::{MessageKind, MessageRecord};

/// Below this width only one pane shows: the list or the conversation,
/// whichever has the focus.
pub const NARROW: u16 = 60;

impl App {
    /// Draws the whole screen.
    pub fn render(&self, f: &mut Frame) {
        self.clickable.replace(Clickable::default());
        let [main, status] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(f.area());
        if main.width < NARROW {
            match self.focus {
                Focus::List => self.render_list(f, main),
                Focus::Input => self.render_conversation(f, main),
            }
        } else {
            let list_width = (main.width / 4).clamp(18, 28);
            let [list, conv] =
                Layout::horizontal([Constraint::Length(list_width), Constraint::Min(20)])
                    .areas(main);
            self.render_list(f, list);
            self.render_conversation(f, conv);
        }
        self.render_status(f, status);
        if self.overlay == Some(Overlay::Help) {
            render_help(f, f.area());
        }
    }

    fn border(&self, focused: bool) -> Style {
        if focused && self.overlay.is_none() {
            Style::new().fg(Color::Cyan)
        } else {
            Style::new().fg(Color::DarkGray)
        }
    }

    fn render_list(&self, f: &mut Frame, area: Rect) {
        let block = Block::bordered()
            .title(" Chats ")
            .border_style(self.border(self.focus == Focus::List));
        let inner = block.inner(area);
        f.render_widget(block, area);
        let width = usize::from(inner.width);
        let mut lines: Vec<Line> = Vec::new();
        if !self.friend_requests.is_empty() {
            lines.push(Line::styled(
                fit(&format!("Requests ({})", self.friend_requests.len()), width),
                Style::new().add_modifier(Modifier::BOLD),
            ));
            for r in &self.friend_requests {
                lines.push(Line::styled(
                    fit(&format!("+ {} /accept", r.from_user.username), width),
                    Style::new().fg(Color::Yellow),
                ));
            }
            lines.push(Line::styled(
                "─".repeat(width),
                Style::new().fg(Color::DarkGray),
            ));
        }
        let mut selected_line = None;
        let mut row_ids = Vec::new();
        for chat in &self.chats {
            let (dot, dot_style) = self.dot(chat);
            let unread = if chat.unread > 0 {
                format!(" ({})", chat.unread)
            } else {
                String::new()
            };
            let mute = if chat.conv.muted { "~" } else { "" };
            let tail = format!("{mute}{unread}");
            let title_width = width.saturating_sub(2 + tail.chars().count());
            let title = pad(&fit(&self.title(chat), title_width), title_width);
            let selected = self.selected == Some(chat.id());
            let mut style = Style::new();
            if chat.unread > 0 {
                style = style.add_modifier(Modifier::BOLD);
            }
            if selected {
                style = style.add_modifier(Modifier::REVERSED);
                selected_line = Some(lines.len());
            }
            row_ids.resize(lines.len(), None);
            row_ids.push(Some(chat.id()));
            lines.push(Line::from(vec![
                Span::styled(dot.to_string(), dot_style),
                Span::raw(" "),
                Span::styled(title, style),
                Span::styled(tail, style.fg(Color::Yellow)),
            ]));
        }
        if self.chats.is_empty() {
            lines.push(Line::styled(
                fit("no chats: /dm USER", width),
                Style::new().add_modifier(Modifier::DIM),
            ));
        }
        let height = usize::from(inner.height);
        let skip = selected_line.map_or(0, |i| (i + 1).saturating_sub(height));
        let visible: Vec<Line> = lines.into_iter().skip(skip).collect();
        f.render_widget(Paragraph::new(visible), inner);
        let mut clickable = self.clickable.borrow_mut();
        clickable.list = inner;
        clickable.rows = row_ids.into_iter().skip(skip).collect();
    }

    /// The presence dot of a list entry: `●` friend online, `○` offline,
    /// `#` group, blank otherwise.
    fn dot(&self, chat: &Chat) -> (char, Style) {
        if !chat.is_direct() {
            return ('#', Style::new().fg(Color::DarkGray));
        }
        match chat.peer(self.me.id).and_then(|p| self.is_online(p)) {
            Some(true) => ('●', Style::new().fg(Color::Green)),
            Some(false) => ('○', Style::new().fg(Color::DarkGray)),
            None => (' ', Style::new()),
        }
    }

    fn render_conversation(&self, f: &mut Frame, area: Rect) {
        let uploads = u16::try_from(self.uploads.len().min(3)).unwrap_or(3);
        let [messages, progress, typing, input] = Layout::vertical([
            Constraint::Min(3),
            Constraint::Length(uploads),
            Constraint::Length(1),
            Constraint::Length(3),
        ])
        .areas(area);
        self.render_messages(f, messages);
        // As many bars as the layout left room for.
        for (i, u) in self
            .uploads
            .iter()
            .take(usize::from(progress.height))
            .enumerate()
        {
            let row = Rect {
                y: progress.y + u16::try_from(i).unwrap_or(0),
                height: 1,
                ..progress
            };
            let gauge = Gauge::default()
                .gauge_style(Style::new().fg(Color::Cyan).bg(Color::DarkGray))
                .percent(u.percent())
                .label(format!(
                    "{} {}% of {}",
                    u.name,
                    u.percent(),
                    format::size(u.total)
                ));
            f.render_widget(gauge, row);
        }
        f.render_widget(
            Paragraph::new(Line::styled(
                format!(" {}", self.typing_line()),
                Style::new()
                    .fg(Color::DarkGray)
                    .add_modifier(Modifier::ITALIC),
            )),
            typing,
        );
        self.render_input(f, input);
    }

    fn render_messages(&self, f: &mut Frame, area: Rect) {
        let title = match self.selected() {
            Some(chat) => {
                let mut t = format!(" {} ", self.title(chat));
                if !chat.is_direct() {
                    t.push_str(&format!("({} members) ", chat.conv.member_count));
                }
                if chat.conv.muted {
                    t.push_str("[muted] ");
                }
                if chat.scroll > 0 {
                    t.push_str(&format!("[↑{}] ", chat.scroll));
                }
                t
            }
            None => " Confab ".to_owned(),
        };
        let block = Block::bordered()
            .title(title)
            .border_style(self.border(false));
        let inner = block.inner(area);
        f.render_widget(block, area);
        let Some(chat) = self.selected() else {
            let hint = vec![
                Line::raw("Welcome to Confab."),
                Line::raw("/dm USER opens a direct chat, ? shows every key."),
            ];
            f.render_widget(Paragraph::new(hint), inner);
            return;
        };
        let width = usize::from(inner.width).max(1);
        let height = usize::from(inner.height);
        // Newest first, skipping what is scrolled past; stop when full.
        // Entries are built only for what is drawn: a long history costs
        // nothing per frame beyond the screenful.
        let mut rows: Vec<Line> = Vec::new();
        let newest_first = chat
            .pending
            .iter()
            .rev()
            .map(Entry::Pending)
            .chain(chat.messages.values().rev().map(Entry::Sent));
        for item in newest_first.skip(chat.scroll) {
            let entry = match item {
                Entry::Pending(p) => pending_entry(p),
                Entry::Sent(m) => self.entry(chat, m),
            };
            let mut wrapped = wrap(entry, width);
            wrapped.reverse();
            rows.extend(wrapped);
            if rows.len() >= height {
                break;
            }
        }
        if rows.len() < height {
            let note = if chat.loading {
                "loading older messages…"
            } else if chat.has_older() {
                "PgUp for older messages"
            } else {
                "(start of the conversation)"
            };
            rows.push(Line::styled(note, Style::new().add_modifier(Modifier::DIM)));
        }
        rows.truncate(height);
        // Newest at the bottom, like every chat: pad a short history above.
        rows.resize(height, Line::raw(""));
        rows.reverse();
        f.render_widget(Paragraph::new(rows), inner);
    }

    /// Every message of a chat as styled spans, oldest first (pending last).
    /// One stored message as styled spans.
    fn entry(&self, chat: &Chat, m: &MessageRecord) -> Vec<Span<'static>> {
        let name = |u| self.name(u);
        let time = Span::styled(
            format!("{} ", format::clock(m.ts)),
            Style::new().fg(Color::DarkGray),
        );
        let text = if m.kind == MessageKind::Encrypted {
            format::encrypted_shown(m, chat.decrypted.get(&m.seq), self.e2ee, &name)
        } else {
            format::body_text(m, &name)
        };
        if m.kind == MessageKind::System {
            return vec![
                time,
                Span::styled(
                    format!("— {text}"),
                    Style::new().fg(Color::DarkGray).add_modifier(Modifier::DIM),
                ),
            ];
        }
        let mine = m.sender_id == self.me.id;
        let mut spans = vec![
            time,
            Span::styled(
                format!(
                    "{}: ",
                    if mine {
                        "You".to_owned()
                    } else {
                        self.name(m.sender_id)
                    }
                ),
                Style::new()
                    .fg(if mine { Color::Cyan } else { Color::Magenta })
                    .add_modifier(Modifier::BOLD),
            ),
            Span::styled(
                text,
                if m.deleted {
                    Style::new().add_modifier(Modifier::DIM | Modifier::ITALIC)
                } else {
                    Style::new()
                },
            ),
        ];
        if m.edited_at.is_some() && !m.deleted {
            spans.push(Span::styled(
                " (edited)",
                Style::new().add_modifier(Modifier::DIM),
            ));
        }
        if !m.reactions.is_empty() {
            let counts: Vec<String> = m
                .reactions
                .iter()
                .map(|(emoji, users)| format!("{emoji}{}", users.len()))
                .collect();
            spans.push(Span::styled(
                format!(" [{}]", counts.join(" ")),
                Style::new().fg(Color::Yellow),
            ));
        }
        if mine {
            spans.push(tick_span(chat.tick(m.seq)));
        }
        spans
    }

    fn render_input(&self, f: &mut Frame, area: Rect) {
        let focused = self.focus == Focus::Input;
        let title = match self.selected() {
            Some(chat) => format!(" to {} ", self.title(chat)),
            None => " /command ".to_owned(),
        };
        let block = Block::bordered()
            .title(title)
            .border_style(self.border(focused));
        let inner = block.inner(area);
        f.render_widget(block, area);
        self.clickable.borrow_mut().input = area;
        let width = usize::from(inner.width).max(1);
        // Keep the cursor visible: show the tail of a long line.
        let before: String = self.input.chars().take(self.cursor).collect();
        let cursor_col = str_width(&before);
        let skip_cols = (cursor_col + 1).saturating_sub(width);
        let mut shown = String::new();
        let mut col = 0;
        for c in self.input.chars() {
            let w = c.width().unwrap_or(0);
            if col >= skip_cols {
                shown.push(c);
            }
            col += w;
        }
        f.render_widget(Paragraph::new(fit(&shown, width)), inner);
        if focused && self.overlay.is_none() {
            let x = inner.x + u16::try_from(cursor_col - skip_cols).unwrap_or(0);
            f.set_cursor_position((x.min(inner.right().saturating_sub(1)), inner.y));
        }
    }

    fn render_status(&self, f: &mut Frame, area: Rect) {
        let (state, style) = match &self.link {
            Link::Connecting => ("connecting…".to_owned(), Style::new().fg(Color::Yellow)),
            Link::Syncing => ("syncing…".to_owned(), Style::new().fg(Color::Yellow)),
            Link::Online => ("● online".to_owned(), Style::new().fg(Color::Green)),
            Link::Reconnecting(_) => ("reconnecting…".to_owned(), Style::new().fg(Color::Red)),
        };
        let me = format!(" {} ", self.me.username);
        let help = " ? help ";
        let used = str_width(&state) + str_width(&me) + help.len() + 3;
        let notice = self.notice.as_deref().unwrap_or("");
        let room = usize::from(area.width).saturating_sub(used);
        let line = Line::from(vec![
            Span::styled(state, style.add_modifier(Modifier::BOLD)),
            Span::styled(me, Style::new().fg(Color::DarkGray)),
            Span::raw("│ "),
            Span::styled(
                pad(&fit(notice, room), room),
                Style::new().fg(Color::Yellow),
            ),
            Span::styled(help, Style::new().add_modifier(Modifier::REVERSED)),
        ]);
        f.render_widget(Paragraph::new(line), area);
    }
}

fn tick_span(tick: Tick) -> Span<'static> {
    let style = match tick {
        Tick::Read => Style::new().fg(Color::Blue),
        Tick::Failed => Style::new().fg(Color::Red),
        _ => Style::new().fg(Color::DarkGray),
    };
    Span::styled(format!("  {}", tick.label()), style)
}

fn render_help(f: &mut Frame, area: Rect) {
    let key_width = HELP.iter().map(|(k, _)| k.len()).max().unwrap_or(10);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:key_width$}  "),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    let want_w = u16::try_from(key_width + 48).unwrap_or(u16::MAX);
    let want_h = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
    let w = want_w.min(area.width);
    let h = want_h.min(area.height);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, rect);
    let block = Block::bordered()
        .title(" Keys and commands (Esc closes) ")
        .border_style(Style::new().fg(Color::Cyan));
    f.render_widget(Paragraph::new(lines).block(block), rect);
}

/// Display width of a string in terminal cells.
fn str_width(s: &str) -> usize {
    s.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// Cuts `s` to at most `width` cells, ending in `…` when cut.
fn fit(s: &str, width: usize) -> String {
    if str_width(s) <= width {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// Pads `s` with spaces to `width` cells.
fn pad(s: &str, width: usize) -> String {
    let w = str_width(s);
    format!("{s}{}", " ".repeat(width.saturating_sub(w)))
}

/// A line of the message pane, before it is drawn.
enum Entry<'a> {
    /// Sent, not yet acked.
    Pending(&'a Pending),
    /// Stored, with its seq.
    Sent(&'a MessageRecord),
}

/// A message still on its way, as styled spans.
fn pending_entry(p: &Pending) -> Vec<Span<'static>> {
    vec![
        Span::styled("      ", Style::new()),
        Span::styled(
            "You: ",
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ),
        Span::raw(p.text.clone()),
        tick_span(if p.error.is_some() {
            Tick::Failed
        } else {
            Tick::Sending
        }),
    ]
}

/// Breaks styled spans into lines of at most `width` cells: between words
/// where it can (a word longer than a line is split), and at every `\n` of
/// a message's text. Continuation lines are indented by two cells.
fn wrap(spans: Vec<Span<'static>>, width: usize) -> Vec<Line<'static>> {
    let mut w = Wrapper {
        width,
        lines: Vec::new(),
        current: Vec::new(),
        used: 0,
        start: 0,
    };
    for span in spans {
        let style = span.style;
        for piece in pieces(&span.content) {
            match piece {
                Piece::Break => w.break_line(),
                Piece::Space(s) => w.space(s, style),
                Piece::Word(s) => w.word(s, style),
            }
        }
    }
    w.lines.push(Line::from(w.current));
    w.lines
}

/// A run of a text, for wrapping.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Word(&'a str),
    Space(&'a str),
    Break,
}

/// `text` as words, runs of blanks and line breaks.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\n' {
            out.push(Piece::Break);
            rest = &rest[1..];
            continue;
        }
        let blank = |c: char| c != '\n' && (c.is_whitespace() || c.is_control());
        let is_blank = blank(c);
        let end = rest
            .char_indices()
            .find(|&(_, d)| d == '\n' || blank(d) != is_blank)
            .map_or(rest.len(), |(i, _)| i);
        let (run, tail) = rest.split_at(end);
        out.push(if is_blank {
            Piece::Space(run)
        } else {
            Piece::Word(run)
        });
        rest = tail;
    }
    out
}

/// Greedy line filling for [`wrap`].
struct Wrapper {
    width: usize,
    lines: Vec<Line<'static>>,
    current: Vec<Span<'static>>,
    /// Cells used on the current line.
    used: usize,
    /// Cells of indentation the current line starts with.
    start: usize,
}

impl Wrapper {
    fn break_line(&mut self) {
        self.lines
            .push(Line::from(std::mem::take(&mut self.current)));
        let indent = 2.min(self.width.saturating_sub(1));
        if indent > 0 {
            self.current.push(Span::raw(" ".repeat(indent)));
        }
        self.used = indent;
        self.start = indent;
    }

    /// Blanks between words: each shown as one space, none at the start of
    /// a continuation line, and none that would overflow (the line ends).
    fn space(&mut self, run: &str, style: Style) {
        if !self.lines.is_empty() && self.used == self.start {
            return;
        }
        let run = " ".repeat(run.chars().count());
        if self.used + run.len() > self.width {
            self.break_line();
            return;
        }
        self.push(&run, style);
    }

    fn word(&mut self, word: &str, style: Style) {
        let w = str_width(word);
        let fits_a_line = w <= self.width.saturating_sub(self.start.max(2));
        if self.used + w > self.width && self.used > self.start && fits_a_line {
            self.break_line();
        }
        self.push(word, style);
    }

    /// Appends text, splitting it by character where a line is full.
    fn push(&mut self, text: &str, style: Style) {
        let mut chunk = String::new();
        for c in text.chars() {
            let cw = c.width().unwrap_or(0);
            if self.used + cw > self.width && self.used > self.start {
                if !chunk.is_empty() {
                    self.current
                        .push(Span::styled(std::mem::take(&mut chunk), style));
                }
                self.break_line();
            }
            chunk.push(c);
            self.used += cw;
        }
        if !chunk.is_empty() {
            self.current.push(Span::styled(chunk, style));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line<'_>]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.content.as_ref()).collect())
            .collect()
    }

    fn wrapped(text: &str, width: usize) -> Vec<String> {
        texts(&wrap(vec![Span::raw(text.to_string())], width))
    }

    #[test]
    fn wraps_between_words_and_indents_what_follows() {
        assert_eq!(
            wrapped("the quick brown fox jumps", 12),
            ["the quick ", "  brown fox ", "  jumps"]
        );
    }

    #[test]
    fn splits_only_words_longer_than_a_line() {
        assert_eq!(
            wrapped("see https://example.com/a/long/path ok", 12),
            ["see https://", "  example.co", "  m/a/long/p", "  ath ok"]
        );
    }

    #[test]
    fn keeps_the_line_breaks_of_a_message() {
        assert_eq!(wrapped("one\ntwo  three", 20), ["one", "  two  three"]);
    }

    #[test]
    fn no_line_is_wider_than_asked_for() {
        let text = "a bb ccc dddd eeeee ffffff\tggggggg\u{7}hhhhhhhh 多字节文字 end";
        // From 4 cells: a double-width character always fits after the indent.
        for width in 4..30 {
            for line in wrapped(text, width) {
                assert!(str_width(&line) <= width, "{width}: {line:?}");
            }
        }
    }

    #[test]
    fn pieces_are_words_blanks_and_breaks() {
        assert_eq!(
            pieces("a  b\nc"),
            [
                Piece::Word("a"),
                Piece::Space("  "),
                Piece::Word("b"),
                Piece::Break,
                Piece::Word("c"),
            ]
        );
    }
}
