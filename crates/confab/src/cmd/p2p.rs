//! `confab p2p …`: the serverless peer. `listen` runs the peer and serves
//! the data dir's control socket; the other commands hand their work to
//! that listener when one runs, and otherwise open the store (and, to
//! deliver, a short-lived swarm) themselves.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use confab_p2p::control::{self, Request};
use confab_p2p::link::ContactLink;
use confab_p2p::node::{Event, Node, NodeConfig};
use confab_p2p::store::{Contact, Store, StoredMessage};
use confab_p2p::{direct_conversation_id, Multiaddr};

/// `confab p2p` subcommands.
#[derive(Debug, Subcommand)]
pub enum P2pCommand {
    /// Print this device's confab:// link (PeerId, name, addresses, relay).
    Id(IdArgs),
    /// Add a contact from its confab:// link.
    Add(AddArgs),
    /// List LAN peers found by mDNS; `--add PEERID` adds one after confirmation.
    Nearby(NearbyArgs),
    /// Send a text to a contact (name or PeerId).
    Send(SendArgs),
    /// Offer a file to a contact; it pulls the bytes peer to peer.
    SendFile(SendFileArgs),
    /// Print the conversation with a contact, in the order every member shows.
    History(HistoryArgs),
    /// Run the peer: print one line per event until stopped.
    Listen(ListenArgs),
    /// Addresses, NAT status, relay reservation, counters, per-contact path.
    Status(StatusArgs),
    /// Mark what a contact (or a group) sent as read: a signed receipt to its members.
    Read(TargetArgs),
    /// Tell a contact (or a group's connected members) that you are typing.
    Typing(TargetArgs),
    /// Serverless groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Register this peer's key as a device of a server account, so people
    /// who trust that server can find it by username.
    Register(super::p2p_account::RegisterArgs),
    /// Look a username up on the server this peer registered with: its
    /// devices' PeerIds (`--add`: as contacts).
    Find(super::p2p_account::FindArgs),
}

/// `confab p2p group …`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with contacts; this device is its admin.
    Create(GroupCreateArgs),
    /// Send a text to a group.
    Send(GroupSendArgs),
    /// Add contacts to a group this device administers.
    Add(GroupMembersArgs),
    /// Remove members from a group this device administers.
    Remove(GroupMembersArgs),
    /// Print a group's messages.
    History(GroupHistoryArgs),
    /// List groups.
    List(CommonArgs),
}

/// Options every `confab p2p` command takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The peer's data dir (device key, p2p.sqlite, files) [default: <data dir>/confab/p2p].
    #[arg(long, env = "CONFAB_P2P_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (repeatable), e.g. /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1.
    #[arg(long = "listen")]
    pub listen: Vec<Multiaddr>,
    /// A relay to keep a reservation on (…/p2p/<relay PeerId>).
    #[arg(long)]
    pub relay: Option<Multiaddr>,
    /// Do not use mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The data dir asked for, else the user's default one.
fn data_dir_or_default(asked: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = asked {
        return Ok(d.clone());
    }
    let base = dirs::data_dir().context("no user data dir; pass --data-dir")?;
    Ok(base.join("confab").join("p2p"))
}

/// Where a peer listens when no `--listen` is given: any port, TCP and QUIC.
fn default_listen() -> anyhow::Result<Vec<Multiaddr>> {
    Ok(vec![
        "/ip4/0.0.0.0/tcp/0".parse()?,
        "/ip4/0.0.0.0/udp/0/quic-v1".parse()?,
    ])
}

/// The peer options of `confab chat --p2p`.
#[derive(Debug, Clone, Args)]
pub struct P2pChatArgs {
    /// With --p2p: the peer's data dir [default: <data dir>/confab/p2p].
    #[arg(long, env = "CONFAB_P2P_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// With --p2p: address to listen on (repeatable) [default: any port, TCP and QUIC].
    #[arg(long = "listen", requires = "p2p")]
    pub listen: Vec<Multiaddr>,
    /// With --p2p: a relay to keep a reservation on (…/p2p/<relay PeerId>).
    #[arg(long, requires = "p2p")]
    pub relay: Option<Multiaddr>,
    /// With --p2p: do not use mDNS.
    #[arg(long, requires = "p2p")]
    pub no_mdns: bool,
}

/// `confab chat --p2p`: the terminal app on this device's peer. Refuses
/// to start while a `confab p2p listen` runs on the same data dir (one
/// peer per data dir); while it runs, the other `confab p2p` commands hand
/// their work to it like to a listener.
pub async fn chat(args: P2pChatArgs) -> anyhow::Result<()> {
    let mut config = NodeConfig::new(data_dir_or_default(args.data_dir.as_ref())?);
    config.listen = if args.listen.is_empty() {
        default_listen()?
    } else {
        args.listen
    };
    config.relay = args.relay;
    config.mdns = !args.no_mdns;
    Ok(confab::tui::terminal::run_p2p(config).await?)
}

impl CommonArgs {
    pub(super) fn data_dir(&self) -> anyhow::Result<PathBuf> {
        data_dir_or_default(self.data_dir.as_ref())
    }

    fn node_config(&self, name: Option<String>) -> anyhow::Result<NodeConfig> {
        let mut config = NodeConfig::new(self.data_dir()?);
        config.listen = self.listen.clone();
        config.relay = self.relay.clone();
        config.mdns = !self.no_mdns;
        config.name = name;
        Ok(config)
    }

    /// Opens the store directly (SQLite in WAL mode: safe beside a listener).
    fn open_store(&self) -> anyhow::Result<Store> {
        let dir = self.data_dir()?;
        let key = confab_p2p::identity::load_or_create(&dir)?;
        Ok(Store::open(
            &dir,
            key.public().to_peer_id(),
            confab_p2p::envelope::DEFAULT_MAX_ENVELOPE_BYTES,
        )?)
    }

    /// Sends a request to the running listener, if any.
    async fn to_listener(
        &self,
        req: &Request,
        wait: Duration,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let dir = self.data_dir()?;
        match control::request(&dir, req, wait + Duration::from_secs(30)).await {
            None => Ok(None),
            Some(Err(e)) => bail!("the running listener: {e}"),
            Some(Ok(r)) if r.ok => Ok(Some(r.result)),
            Some(Ok(r)) => bail!("{}", r.error.unwrap_or_else(|| "failed".into())),
        }
    }
}

/// `confab p2p id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Set the display name carried in the link.
    #[arg(long)]
    name: Option<String>,
}

/// `confab p2p add LINK`.
#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The contact's confab:// link.
    link: String,
    /// Name to use instead of the one in the link.
    #[arg(long)]
    name: Option<String>,
}

/// `confab p2p nearby`.
#[derive(Debug, Args)]
pub struct NearbyArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Seconds to look for peers when no listener runs.
    #[arg(long, default_value_t = 5)]
    wait: u64,
    /// Add this nearby peer (PeerId or its name) as a contact, after confirmation.
    #[arg(long)]
    add: Option<String>,
    /// Confirm `--add` without asking.
    #[arg(long)]
    yes: bool,
}

/// `confab p2p send CONTACT TEXT`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Contact name or PeerId.
    contact: String,
    /// Text.
    text: String,
    /// Seconds to try to deliver before leaving it in the outbox.
    #[arg(long, default_value_t = 10)]
    wait: u64,
    /// Send in the encrypted (MLS) conversation with the contact, made on
    /// first use (the contact must be online then: its keys come from it).
    #[arg(long)]
    encrypted: bool,
}

/// `confab p2p send-file CONTACT PATH`.
#[derive(Debug, Args)]
pub struct SendFileArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Contact name or PeerId.
    contact: String,
    /// The file.
    path: PathBuf,
    /// Seconds to wait for the contact to ack the offer (and, without a
    /// listener, to keep serving the bytes).
    #[arg(long, default_value_t = 10)]
    wait: u64,
    /// In the encrypted (MLS) conversation with the contact: the file's
    /// name, size and hash go inside the MLS message (waits for the
    /// contact's keys like `send --encrypted`).
    #[arg(long)]
    encrypted: bool,
}

/// `confab p2p history CONTACT`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Contact name or PeerId.
    contact: String,
    /// The encrypted (MLS) conversation with the contact, not the plain one.
    #[arg(long)]
    encrypted: bool,
}

/// `confab p2p listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Set the display name.
    #[arg(long)]
    name: Option<String>,
}

/// `confab p2p read|typing TARGET`.
#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Contact name or PeerId, or group id or title.
    target: String,
}

/// `confab p2p status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    common: CommonArgs,
}

/// `confab p2p group create TITLE MEMBER...`.
#[derive(Debug, Args)]
pub struct GroupCreateArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Title.
    title: String,
    /// Contacts (names or PeerIds).
    #[arg(required = true)]
    members: Vec<String>,
    /// An encrypted (MLS) group: every member must be online now (its keys
    /// come from it); its messages are sent encrypted by `group send`.
    #[arg(long)]
    encrypted: bool,
}

/// `confab p2p group send GROUP TEXT`.
#[derive(Debug, Args)]
pub struct GroupSendArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Group id (or title).
    group: String,
    /// Text.
    text: String,
}

/// `confab p2p group add|remove GROUP MEMBER...`.
#[derive(Debug, Args)]
pub struct GroupMembersArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Group id (or title).
    group: String,
    /// Contacts (names or PeerIds).
    #[arg(required = true)]
    members: Vec<String>,
}

/// `confab p2p group history GROUP`.
#[derive(Debug, Args)]
pub struct GroupHistoryArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Group id (or title).
    group: String,
}

/// Runs a `confab p2p` command.
pub async fn run(cmd: P2pCommand) -> anyhow::Result<()> {
    match cmd {
        P2pCommand::Id(a) => id(a).await,
        P2pCommand::Add(a) => add(a).await,
        P2pCommand::Nearby(a) => nearby(a).await,
        P2pCommand::Send(a) => send(a).await,
        P2pCommand::SendFile(a) => send_file(a).await,
        P2pCommand::Register(a) => super::p2p_account::register(a).await,
        P2pCommand::Find(a) => super::p2p_account::find(a).await,
        P2pCommand::History(a) => history(a),
        P2pCommand::Listen(a) => listen(a).await,
        P2pCommand::Status(a) => status(a).await,
        P2pCommand::Read(a) => read(a).await,
        P2pCommand::Typing(a) => typing(a).await,
        P2pCommand::Group(GroupCommand::Create(a)) => group_create(a).await,
        P2pCommand::Group(GroupCommand::Send(a)) => group_send(a).await,
        P2pCommand::Group(GroupCommand::Add(a)) => group_change(a, true).await,
        P2pCommand::Group(GroupCommand::Remove(a)) => group_change(a, false).await,
        P2pCommand::Group(GroupCommand::History(a)) => group_history(a),
        P2pCommand::Group(GroupCommand::List(a)) => group_list(a),
    }
}

async fn id(args: IdArgs) -> anyhow::Result<()> {
    let store = args.common.open_store()?;
    if let Some(name) = &args.name {
        store.set_meta("name", name)?;
    }
    let me: confab_p2p::PeerId = store.me().parse()?;
    let addrs: Vec<Multiaddr> = match args
        .common
        .to_listener(&Request::Addrs, Duration::ZERO)
        .await?
    {
        Some(v) => serde_json::from_value::<Vec<String>>(v)?
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect(),
        None => args.common.listen.clone(),
    };
    // Links carry dialable addresses without the trailing /p2p (the link has the PeerId).
    let addrs = addrs
        .into_iter()
        .map(|a| {
            a.into_iter()
                .filter(|p| !matches!(p, confab_p2p::Protocol::P2p(_)))
                .collect()
        })
        .collect();
    let link = ContactLink {
        peer: me,
        name: store.meta("name")?.unwrap_or_default(),
        addrs,
        relay: args.common.relay.clone(),
    };
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({ "peer_id": me.to_base58(), "name": link.name, "link": link.to_link() })
        );
    } else {
        println!("{}", link.to_link());
    }
    Ok(())
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    let link = ContactLink::parse(&args.link)?;
    let contact = Contact {
        peer_id: link.peer.to_base58(),
        name: args.name.unwrap_or(link.name),
        addrs: link.addrs.iter().map(|a| a.to_string()).collect(),
        relay: link.relay.map(|r| r.to_string()),
    };
    add_contact(&args.common, contact).await
}

/// Adds a contact through the running listener, or straight into the
/// store when none runs.
pub(super) async fn add_contact(common: &CommonArgs, contact: Contact) -> anyhow::Result<()> {
    let req = Request::Add {
        contact: contact.clone(),
    };
    if common.to_listener(&req, Duration::ZERO).await?.is_none() {
        common.open_store()?.add_contact(&contact)?;
    }
    if common.json {
        println!("{}", serde_json::to_string(&contact)?);
    } else {
        println!("added {} ({})", contact.name, contact.peer_id);
    }
    Ok(())
}

async fn nearby(args: NearbyArgs) -> anyhow::Result<()> {
    let found = match args
        .common
        .to_listener(&Request::Nearby, Duration::ZERO)
        .await?
    {
        Some(v) => serde_json::from_value::<Vec<confab_p2p::node::NearbyPeer>>(v)?,
        None => {
            let node = Node::start(args.common.node_config(None)?).await?;
            // mDNS answers come within a query interval; look for the given time.
            tokio::time::sleep(Duration::from_secs(args.wait)).await;
            let found = node.nearby().await?;
            node.shutdown().await;
            found
        }
    };
    if let Some(want) = &args.add {
        let peer = found
            .iter()
            .find(|p| p.peer_id == *want || p.name == *want)
            .with_context(|| format!("{want:?} is not among the nearby peers"))?;
        if !args.yes {
            if !std::io::stdin().is_terminal() {
                bail!("adding a nearby peer needs confirmation: run in a terminal or pass --yes");
            }
            eprint!("add {} ({}) as a contact? [y/N] ", peer.name, peer.peer_id);
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            if !matches!(line.trim(), "y" | "Y" | "yes") {
                bail!("not added");
            }
        }
        let contact = Contact {
            peer_id: peer.peer_id.clone(),
            name: peer.name.clone(),
            addrs: peer.addrs.clone(),
            relay: None,
        };
        return add_contact(&args.common, contact).await;
    }
    if args.common.json {
        println!("{}", serde_json::to_string(&found)?);
    } else if found.is_empty() {
        println!("no peers found nearby");
    } else {
        for p in found {
            let mark = if p.contact { " (contact)" } else { "" };
            println!("{}\t{}{}\t{}", p.peer_id, p.name, mark, p.addrs.join(" "));
        }
    }
    Ok(())
}

fn print_send_result(json: bool, contact: &str, result: &serde_json::Value) {
    if json {
        println!("{result}");
    } else if let Some(why) = result["waiting"].as_str() {
        println!(
            "{why}\nkept on this device: sent encrypted when {contact} is online \
             (while `confab p2p listen` or `confab chat --p2p` runs here)"
        );
    } else if result["delivered"].as_bool() == Some(true) {
        println!("delivered to {contact}");
    } else {
        println!("not delivered yet: kept in the outbox, retried when {contact} is reachable");
    }
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    let wait = Duration::from_secs(args.wait);
    let req = Request::Send {
        contact: args.contact.clone(),
        text: args.text.clone(),
        wait_ms: wait.as_millis() as u64,
        encrypted: args.encrypted,
    };
    if let Some(result) = args.common.to_listener(&req, wait).await? {
        print_send_result(args.common.json, &args.contact, &result);
        return Ok(());
    }
    if args.encrypted {
        // Without the contact's keys after `wait`, the text waits in the
        // store (sent by the next node that runs here).
        let result = run_here(&args.common, req).await?;
        print_send_result(args.common.json, &args.contact, &result);
        return Ok(());
    }
    let node = Node::start(args.common.node_config(None)?).await?;
    let events = node.subscribe();
    let env = node.send_text(&args.contact, &args.text).await?;
    let peer = contact_peer(&node, &args.contact).await?;
    let delivered = node
        .wait_delivered(events, &peer, &env.client_msg_id, wait)
        .await?;
    node.shutdown().await;
    let result = serde_json::json!({
        "client_msg_id": env.client_msg_id, "conversation_id": env.conversation_id, "delivered": delivered
    });
    print_send_result(args.common.json, &args.contact, &result);
    Ok(())
}

/// A request run by a short-lived node of this data dir (no listener
/// runs): what the listener would answer.
async fn run_here(common: &CommonArgs, req: Request) -> anyhow::Result<serde_json::Value> {
    let node = Node::start(common.node_config(None)?).await?;
    let result = control::run(&node, req).await;
    node.shutdown().await;
    Ok(result?)
}

async fn contact_peer(node: &Node, contact: &str) -> anyhow::Result<String> {
    let who = contact.to_owned();
    Ok(node
        .store()
        .call(move |s| Ok(s.find_contact(&who)?.peer_id))
        .await?)
}

async fn send_file(args: SendFileArgs) -> anyhow::Result<()> {
    let wait = Duration::from_secs(args.wait);
    let path =
        std::fs::canonicalize(&args.path).with_context(|| format!("{}", args.path.display()))?;
    let req = Request::SendFile {
        contact: args.contact.clone(),
        path: path.clone(),
        wait_ms: wait.as_millis() as u64,
        encrypted: args.encrypted,
    };
    if let Some(result) = args.common.to_listener(&req, wait).await? {
        print_send_result(args.common.json, &args.contact, &result);
        return Ok(());
    }
    if args.encrypted {
        let result = run_here(&args.common, req).await?;
        print_send_result(args.common.json, &args.contact, &result);
        return Ok(());
    }
    let node = Node::start(args.common.node_config(None)?).await?;
    let events = node.subscribe();
    let env = node.send_file(&args.contact, &path).await?;
    let peer = contact_peer(&node, &args.contact).await?;
    let delivered = node
        .wait_delivered(events, &peer, &env.client_msg_id, wait)
        .await?;
    node.shutdown().await;
    let result = serde_json::json!({
        "client_msg_id": env.client_msg_id, "conversation_id": env.conversation_id, "delivered": delivered,
        "note": "the contact pulls the bytes from a running `confab p2p listen` of this data dir"
    });
    print_send_result(args.common.json, &args.contact, &result);
    Ok(())
}

/// One line of history: `sender: text` with file state.
fn show(store: &Store, names: &HashMap<String, String>, m: &StoredMessage) -> String {
    let who = names
        .get(&m.sender)
        .cloned()
        .unwrap_or_else(|| m.sender.clone());
    let body: serde_json::Value = serde_json::from_str(&m.body).unwrap_or_default();
    let text = match m.kind.as_str() {
        "text" => body["text"].as_str().unwrap_or("").to_owned(),
        "file" | "image" | "voice" => {
            let sha = body["media_id"].as_str().unwrap_or("");
            // Only a verified file is shown as available.
            match store.file(sha).ok().flatten() {
                Some(f) if f.complete => format!("[{} {} bytes] {}", m.kind, f.size, f.path),
                _ => format!(
                    "[{} {}: receiving]",
                    m.kind,
                    body["name"].as_str().unwrap_or("")
                ),
            }
        }
        "group_create" => format!("[created group {}]", body["title"].as_str().unwrap_or("")),
        "receipt" => format!(
            "[read {} message(s)]",
            body["of"].as_array().map(Vec::len).unwrap_or(0)
        ),
        "group_change" => {
            let name_of = |p: &str| names.get(p).cloned().unwrap_or_else(|| p.to_owned());
            let list = |v: &serde_json::Value, key: Option<&str>| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| match key {
                        Some(k) => x[k].as_str().map(|p| {
                            let n = x["name"].as_str().unwrap_or("");
                            if n.is_empty() {
                                name_of(p)
                            } else {
                                n.to_owned()
                            }
                        }),
                        None => x.as_str().map(name_of),
                    })
                    .collect()
            };
            let (added, removed) = (
                list(&body["add"], Some("peer")),
                list(&body["remove"], None),
            );
            let mut parts = Vec::new();
            if !added.is_empty() {
                parts.push(format!("added {}", added.join(", ")));
            }
            if !removed.is_empty() {
                parts.push(format!("removed {}", removed.join(", ")));
            }
            format!("[{}]", parts.join("; "))
        }
        other => format!("[{other}]"),
    };
    format!("{who}: {text}")
}

fn names(store: &Store) -> anyhow::Result<HashMap<String, String>> {
    let mut names: HashMap<String, String> = store
        .contacts()?
        .into_iter()
        .map(|c| (c.peer_id, c.name))
        .collect();
    names.insert(store.me().to_owned(), "me".into());
    Ok(names)
}

fn print_history(common: &CommonArgs, store: &Store, conversation_id: &str) -> anyhow::Result<()> {
    let names = names(store)?;
    let read = store.read_by(conversation_id)?;
    for shown in store.shown_history(conversation_id)? {
        let m = &shown.message;
        let by: Vec<&String> = read
            .get(&m.client_msg_id)
            .map(|s| s.iter().collect())
            .unwrap_or_default();
        // Encrypted messages show decrypted, marked; those not opened say
        // why instead of their ciphertext.
        let line = match (&shown.waiting, &shown.unreadable) {
            (Some(why), _) => format!("[encrypted message, waiting: {why}]"),
            (_, Some(why)) => format!("[encrypted message, unreadable: {why}]"),
            _ if shown.encrypted => format!("{} [encrypted]", show(store, &names, m)),
            _ => show(store, &names, m),
        };
        if common.json {
            let mut v = serde_json::to_value(&shown)?;
            v["read_by"] = serde_json::json!(by);
            println!("{v}");
        } else if by.is_empty() {
            println!("{line}");
        } else {
            let who: Vec<String> = by
                .iter()
                .map(|p| names.get(*p).cloned().unwrap_or_else(|| (*p).clone()))
                .collect();
            println!("{line}  (read by {})", who.join(", "));
        }
    }
    // Written here but not sent yet: the contact's keys have not come.
    for w in store.waiting_sends(None)? {
        if w.conversation_id != conversation_id {
            continue;
        }
        let text = serde_json::from_str::<serde_json::Value>(&w.body)
            .ok()
            .and_then(|b| b["text"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("[{}]", w.kind));
        if common.json {
            let mut v = serde_json::to_value(&w)?;
            v["waiting"] = "waiting for keys: not sent yet".into();
            println!("{v}");
        } else {
            let me = names
                .get(store.me())
                .cloned()
                .unwrap_or_else(|| "me".into());
            println!("{me}: {text} [waiting for keys: not sent yet]");
        }
    }
    Ok(())
}

/// `confab p2p read TARGET`.
async fn read(args: TargetArgs) -> anyhow::Result<()> {
    let req = Request::Read {
        target: args.target.clone(),
    };
    let result = match args.common.to_listener(&req, Duration::ZERO).await? {
        Some(v) => v,
        None => {
            let node = Node::start(args.common.node_config(None)?).await?;
            let conv = args
                .common
                .open_store()?
                .resolve_conversation(&args.target)?;
            let env = node.mark_read(&conv).await;
            node.shutdown().await;
            control::read_result(env?.as_ref())
        }
    };
    if args.common.json {
        println!("{result}");
    } else {
        let n = result["of"].as_array().map(Vec::len).unwrap_or(0);
        if n == 0 {
            println!("nothing unread");
        } else {
            println!("marked {n} message(s) read (the receipt is queued for every member)");
        }
    }
    Ok(())
}

/// `confab p2p typing TARGET` (through a running listener only: the
/// signal is worth nothing without an open connection).
async fn typing(args: TargetArgs) -> anyhow::Result<()> {
    let req = Request::Typing {
        target: args.target.clone(),
    };
    let Some(result) = args.common.to_listener(&req, Duration::ZERO).await? else {
        bail!("typing needs a running `confab p2p listen` of this data dir");
    };
    if args.common.json {
        println!("{result}");
    } else {
        println!("typing sent to {} member(s)", result["sent"]);
    }
    Ok(())
}

fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let store = args.common.open_store()?;
    let contact = store.find_contact(&args.contact)?;
    let conv = if args.encrypted {
        confab_p2p::store::encrypted_direct_conversation_id(store.me(), &contact.peer_id)
    } else {
        direct_conversation_id(store.me(), &contact.peer_id)
    };
    print_history(&args.common, &store, &conv)
}

fn find_group(store: &Store, group: &str) -> anyhow::Result<String> {
    let all = store.conversations()?;
    let found: Vec<_> = all
        .iter()
        .filter(|c| c.kind == "group" && (c.id == group || c.title == group))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => bail!("no group {group:?}"),
        _ => bail!("several groups are titled {group:?}; use the id"),
    }
}

fn group_history(args: GroupHistoryArgs) -> anyhow::Result<()> {
    let store = args.common.open_store()?;
    let id = find_group(&store, &args.group)?;
    print_history(&args.common, &store, &id)
}

fn group_list(args: CommonArgs) -> anyhow::Result<()> {
    let store = args.open_store()?;
    for c in store
        .conversations()?
        .into_iter()
        .filter(|c| c.kind == "group")
    {
        if args.json {
            println!("{}", serde_json::to_string(&c)?);
        } else {
            println!("{}\t{}\t{} members", c.id, c.title, c.members.len());
        }
    }
    Ok(())
}

async fn group_create(args: GroupCreateArgs) -> anyhow::Result<()> {
    let req = Request::GroupCreate {
        title: args.title.clone(),
        members: args.members.clone(),
        encrypted: args.encrypted,
    };
    let id = match args.common.to_listener(&req, Duration::ZERO).await? {
        Some(v) => v["group"].as_str().unwrap_or("").to_owned(),
        None if args.encrypted => {
            let node = Node::start(args.common.node_config(None)?).await?;
            // The members' KeyPackages come from them: retry while they connect.
            let made = node
                .create_encrypted_group_within(
                    &args.title,
                    args.members.clone(),
                    Duration::from_secs(20),
                )
                .await;
            node.shutdown().await;
            made?
        }
        None => {
            let node = Node::start(args.common.node_config(None)?).await?;
            let id = node.create_group(&args.title, args.members.clone()).await?;
            node.shutdown().await;
            id
        }
    };
    if args.common.json {
        let mut out = serde_json::json!({ "group": id });
        if args.encrypted {
            out["encrypted"] = true.into();
        }
        println!("{out}");
    } else {
        println!("{id}");
    }
    Ok(())
}

async fn group_send(args: GroupSendArgs) -> anyhow::Result<()> {
    let group = find_group(&args.common.open_store()?, &args.group)?;
    let req = Request::GroupSend {
        group: group.clone(),
        text: args.text.clone(),
    };
    let result = match args.common.to_listener(&req, Duration::ZERO).await? {
        Some(v) => v,
        None => {
            let node = Node::start(args.common.node_config(None)?).await?;
            let body = serde_json::json!({ "text": args.text }).to_string();
            let id = group.clone();
            let encrypted = node.store().call(move |s| s.is_encrypted(&id)).await?;
            let env = if encrypted {
                node.send_encrypted(&group, "text", body).await
            } else {
                node.send_to_conversation(&group, "text", body).await
            };
            node.shutdown().await;
            let env = env?;
            serde_json::json!({ "client_msg_id": env.client_msg_id, "encrypted": encrypted })
        }
    };
    if args.common.json {
        println!("{result}");
    } else {
        println!("queued for every member (delivered by the running listener)");
    }
    Ok(())
}

/// `group add` (`adding`) or `group remove`: a signed `group_change`
/// queued to every member, old and new.
async fn group_change(args: GroupMembersArgs, adding: bool) -> anyhow::Result<()> {
    let group = find_group(&args.common.open_store()?, &args.group)?;
    let (add, remove) = if adding {
        (args.members.clone(), Vec::new())
    } else {
        (Vec::new(), args.members.clone())
    };
    let req = Request::GroupChange {
        group: group.clone(),
        add: add.clone(),
        remove: remove.clone(),
    };
    let result = match args.common.to_listener(&req, Duration::ZERO).await? {
        Some(v) => v,
        None => {
            let node = Node::start(args.common.node_config(None)?).await?;
            let env = node.change_group(&group, add, remove).await;
            node.shutdown().await;
            serde_json::json!({ "client_msg_id": env?.client_msg_id })
        }
    };
    if args.common.json {
        println!("{result}");
    } else {
        println!("member change queued for every member (delivered by the running listener)");
    }
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let status: confab_p2p::node::Status = match args
        .common
        .to_listener(&Request::Status, Duration::ZERO)
        .await?
    {
        Some(v) => serde_json::from_value(v)?,
        None => {
            let store = args.common.open_store()?;
            let mut contacts = Vec::new();
            for c in store.contacts()? {
                let pending = store.pending_ids(&c.peer_id)?.len() as u64;
                contacts.push(confab_p2p::node::ContactStatus {
                    peer_id: c.peer_id,
                    name: c.name,
                    path: "offline".into(),
                    pending,
                    connections: Vec::new(),
                    discovered: Vec::new(),
                });
            }
            confab_p2p::node::Status {
                peer_id: store.me().to_owned(),
                name: store.meta("name")?.unwrap_or_default(),
                listen_addrs: Vec::new(),
                external_addrs: Vec::new(),
                nat: "not running".into(),
                reservation: None,
                rendezvous: None,
                counters: Default::default(),
                contacts,
            }
        }
    };
    if args.common.json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    println!("peer      {} ({})", status.peer_id, status.name);
    for a in &status.listen_addrs {
        println!("listen    {a}");
    }
    for a in &status.external_addrs {
        println!("external  {a}");
    }
    println!("nat       {}", status.nat);
    println!(
        "relay     {}",
        status.reservation.as_deref().unwrap_or("no reservation")
    );
    match &status.rendezvous {
        None => println!("rendezvous none (no relay)"),
        Some(r) => {
            let mut line = format!("rendezvous {} at {} as {}", r.state, r.point, r.namespace);
            if let (Some(exp), Some(renew)) = (r.expires_in_s, r.renews_in_s) {
                line.push_str(&format!(
                    ", ttl {} s, expires in {exp} s, renews in {renew} s",
                    r.ttl_s
                ));
            }
            if let Some(e) = &r.error {
                line.push_str(&format!(", last error {e}"));
            }
            println!("{line}");
            for a in &r.addrs {
                println!("  registered {a}");
            }
        }
    }
    let c = &status.counters;
    println!(
        "delivered direct {} relayed {} mailbox {}; received {}; refused {}; hole punches {}/{}",
        c.delivered_direct,
        c.delivered_relayed,
        c.delivered_mailbox,
        c.received,
        c.refused,
        c.holepunch_successes,
        c.holepunch_attempts
    );
    for c in &status.contacts {
        println!(
            "contact   {}\t{}\t{}\t{} pending",
            c.name, c.peer_id, c.path, c.pending
        );
        for a in &c.connections {
            println!("  via     {a}");
        }
        for a in &c.discovered {
            println!("  found   {a}");
        }
    }
    Ok(())
}

async fn listen(args: ListenArgs) -> anyhow::Result<()> {
    let mut common = args.common.clone();
    if common.listen.is_empty() {
        common.listen = default_listen()?;
    }
    let node = Node::start(common.node_config(args.name.clone())?).await?;
    let mut events = node.events_from_start();
    let mut control = tokio::spawn(control::serve(node.clone()));
    let data_dir = common.data_dir()?;
    let mut names = names(&common.open_store()?)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = term.recv() => break Ok(()),
            r = &mut control => break match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(e.into()),
            },
            ev = events.recv() => match ev {
                Ok(ev) => {
                    if matches!(ev, Event::Connected { .. } | Event::Message { .. }) {
                        let fresh = node
                            .store()
                            .call(|s| Ok(s.contacts()?.into_iter().map(|c| (c.peer_id, c.name)).collect::<Vec<_>>()))
                            .await?;
                        names.extend(fresh);
                    }
                    if common.json {
                        println!("{}", serde_json::to_string(&ev)?);
                    } else {
                        println!("{}", event_line(&names, &ev));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => eprintln!("({n} events skipped)"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break Ok(()),
            },
        }
    };
    node.shutdown().await;
    let _ = std::fs::remove_file(control::socket_path(&data_dir));
    result
}

/// Text form of an event for `listen`.
fn event_line(names: &HashMap<String, String>, ev: &Event) -> String {
    let name = |p: &str| names.get(p).cloned().unwrap_or_else(|| p.to_owned());
    match ev {
        Event::Listening { addr } => format!("listening {addr}"),
        Event::Discovered { peer, addrs } => format!("nearby {} {}", name(peer), addrs.join(" ")),
        Event::Connected { peer, path, addr } => {
            format!("connected {} {path} {addr}", name(peer))
        }
        Event::Disconnected { peer } => format!("disconnected {}", name(peer)),
        Event::Typing {
            peer,
            conversation_id,
        } => format!("typing {conversation_id} {}", name(peer)),
        Event::Message { message } => {
            let body: serde_json::Value = serde_json::from_str(&message.body).unwrap_or_default();
            let why = ["waiting", "unreadable"].into_iter().find_map(|k| {
                body[k]
                    .as_str()
                    .map(|r| format!("[encrypted message, {k}: {r}]"))
            });
            let text = body["text"]
                .as_str()
                .map(str::to_owned)
                .or(why)
                .unwrap_or_else(|| format!("[{}]", message.kind));
            format!(
                "message {} {}: {text}",
                message.conversation_id,
                name(&message.sender)
            )
        }
        Event::Delivered {
            to,
            client_msg_id,
            path,
        } => format!("delivered {client_msg_id} to {} {path}", name(to)),
        Event::Refused {
            from,
            code,
            message,
        } => format!("refused from {}: {code}: {message}", name(from)),
        Event::FileReceived { sha256, path } => format!("file {sha256} {path}"),
        Event::Sent { envelope } => format!(
            "sent {} {} in {}",
            envelope.kind, envelope.client_msg_id, envelope.conversation_id
        ),
        Event::FileProgress {
            sha256,
            peer,
            direction,
            bytes,
            size,
        } => format!(
            "file {sha256} {} {}: {bytes} of {size} bytes",
            if direction == "in" { "from" } else { "to" },
            name(peer)
        ),
        Event::HolePunch { peer, ok, .. } => format!(
            "hole-punch {} {}",
            name(peer),
            if *ok { "ok" } else { "failed" }
        ),
        Event::Nat { status } => format!("nat {status}"),
        Event::Reservation { relay } => format!("reservation {relay}"),
        Event::MailboxFetched { count } => format!("mailbox {count} envelope(s)"),
        Event::RendezvousRegistered {
            rendezvous,
            ttl_s,
            addrs,
            ..
        } => format!(
            "registered at {rendezvous} for {ttl_s} s: {}",
            addrs.join(" ")
        ),
        Event::RendezvousDiscovered { peer, addrs, .. } => {
            format!("found {} at {}", name(peer), addrs.join(" "))
        }
        Event::RendezvousNotFound { peer, rendezvous } => {
            format!("{} is not registered at {rendezvous}", name(peer))
        }
        Event::WaitingSent {
            peer,
            client_msg_id,
            ..
        } => format!(
            "sent {client_msg_id} to {} (it waited for their keys)",
            name(peer)
        ),
    }
}
