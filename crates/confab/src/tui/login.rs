//! The login form shown by `confab chat` when there is no saved session:
//! username and password, log in or register. The form's state is sans-IO
//! ([`LoginForm`]); [`run_form`] drives it with the SDK.

use std::path::Path;

use confab_sdk::{Client, DeviceKey, E2ee};
use ratatui::backend::Backend;
use ratatui::crossterm::event::{Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::{Frame, Terminal};
use tokio::sync::mpsc;

use super::runner::RunError;

/// Which field has the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The username.
    Username,
    /// The password.
    Password,
}

/// What the user asked the form to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormAction {
    /// Log in (or register and log in) with what was typed.
    Submit,
    /// Leave the app.
    Quit,
}

/// The login form's state.
#[derive(Debug, Clone)]
pub struct LoginForm {
    server: String,
    username: String,
    password: String,
    field: Field,
    register: bool,
    busy: bool,
    error: Option<String>,
}

impl LoginForm {
    /// An empty form for the server at `server`.
    pub fn new(server: &str) -> LoginForm {
        LoginForm {
            server: server.to_owned(),
            username: String::new(),
            password: String::new(),
            field: Field::Username,
            register: false,
            busy: false,
            error: None,
        }
    }

    /// The username typed so far.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Whether the form creates an account before logging in.
    pub fn registering(&self) -> bool {
        self.register
    }

    /// The last error, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Handles a terminal event.
    pub fn on_terminal(&mut self, event: TermEvent) -> Option<FormAction> {
        let TermEvent::Key(key) = event else {
            return None;
        };
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let field = match self.field {
            Field::Username => &mut self.username,
            Field::Password => &mut self.password,
        };
        match key.code {
            KeyCode::Char('c') | KeyCode::Char('d') if ctrl => return Some(FormAction::Quit),
            KeyCode::Esc => return Some(FormAction::Quit),
            KeyCode::F(2) => self.register = !self.register,
            KeyCode::Char('r') if ctrl => self.register = !self.register,
            KeyCode::Tab | KeyCode::BackTab | KeyCode::Up | KeyCode::Down => {
                self.field = match self.field {
                    Field::Username => Field::Password,
                    Field::Password => Field::Username,
                }
            }
            KeyCode::Enter => {
                if self.field == Field::Username {
                    self.field = Field::Password;
                } else if self.username.is_empty() || self.password.is_empty() {
                    self.error = Some("type a username and a password".to_owned());
                } else {
                    return Some(FormAction::Submit);
                }
            }
            KeyCode::Backspace => {
                field.pop();
            }
            KeyCode::Char('u') if ctrl => field.clear(),
            KeyCode::Char(c) if !ctrl && !c.is_control() => field.push(c),
            _ => {}
        }
        None
    }

    /// Draws the form in the middle of the screen.
    pub fn render(&self, f: &mut Frame) {
        let area = f.area();
        let w = 60.min(area.width);
        let h = 12.min(area.height);
        let rect = Rect {
            x: area.x + (area.width - w) / 2,
            y: area.y + (area.height - h) / 2,
            width: w,
            height: h,
        };
        let title = if self.register {
            " Confab: create an account "
        } else {
            " Confab: log in "
        };
        let block = Block::bordered()
            .title(title)
            .border_style(Style::new().fg(Color::Cyan));
        let inner = block.inner(rect);
        let label = |name: &str, field: Field| {
            let style = if self.field == field {
                Style::new().add_modifier(Modifier::BOLD).fg(Color::Cyan)
            } else {
                Style::new()
            };
            Span::styled(format!("{name:>9}: "), style)
        };
        let cursor = |field: Field| if self.field == field { "_" } else { "" };
        let dim = Style::new().add_modifier(Modifier::DIM);
        let mut lines = vec![
            Line::from(vec![
                Span::styled("   server: ", dim),
                Span::styled(self.server.clone(), dim),
            ]),
            Line::raw(""),
            Line::from(vec![
                label("username", Field::Username),
                Span::raw(format!("{}{}", self.username, cursor(Field::Username))),
            ]),
            Line::from(vec![
                label("password", Field::Password),
                Span::raw(format!(
                    "{}{}",
                    "*".repeat(self.password.chars().count()),
                    cursor(Field::Password)
                )),
            ]),
            Line::raw(""),
        ];
        if self.busy {
            lines.push(Line::styled("working…", Style::new().fg(Color::Yellow)));
        } else if let Some(e) = &self.error {
            lines.push(Line::styled(e.clone(), Style::new().fg(Color::Red)));
        } else {
            lines.push(Line::raw(""));
        }
        let switch = if self.register {
            "F2 log in instead"
        } else {
            "F2 register"
        };
        lines.push(Line::styled(
            format!("Enter submit · Tab next field · {switch} · Esc quit"),
            dim,
        ));
        f.render_widget(Clear, rect);
        f.render_widget(block, rect);
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
    }
}

/// Shows the form until the client is logged in (true) or the user quits
/// (false). On success the client holds the new session (its session
/// watchers, e.g. the one saving it to a file, see it).
pub async fn run_form<B: Backend>(
    terminal: &mut Terminal<B>,
    input: &mut mpsc::Receiver<TermEvent>,
    client: &Client,
    e2ee_dir: Option<&Path>,
) -> Result<bool, RunError> {
    let mut form = LoginForm::new(client.base_url());
    loop {
        terminal
            .draw(|f| form.render(f))
            .map_err(|e| RunError::Draw(e.to_string()))?;
        let Some(event) = input.recv().await else {
            return Ok(false);
        };
        match form.on_terminal(event) {
            Some(FormAction::Quit) => return Ok(false),
            Some(FormAction::Submit) => {
                form.busy = true;
                terminal
                    .draw(|f| form.render(f))
                    .map_err(|e| RunError::Draw(e.to_string()))?;
                let (user, password) = (form.username.clone(), form.password.clone());
                let result = async {
                    if form.register {
                        client.register(&user, &password, None).await?;
                    }
                    let Some(dir) = e2ee_dir else {
                        return client.login(&user, &password, Some("confab chat")).await;
                    };
                    // A device key too, so this device can take part in
                    // end-to-end encrypted conversations.
                    let key = DeviceKey::generate()?;
                    let session = client
                        .login_with_key(
                            &user,
                            &password,
                            Some("confab chat"),
                            Some(&key.public_b64()),
                        )
                        .await?;
                    E2ee::start_device(client.clone(), dir, key).await?;
                    Ok(session)
                }
                .await;
                form.busy = false;
                match result {
                    Ok(_) => return Ok(true),
                    Err(e) => {
                        form.error = Some(e.to_string());
                        form.password.clear();
                    }
                }
            }
            None => {}
        }
    }
}
