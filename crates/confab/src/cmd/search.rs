//! `confab search QUERY`: full-text search over the messages I can read.

use clap::Args;
use confab_sdk::SearchOptions;

use super::ClientArgs;

/// `confab search QUERY`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Words, "quoted phrases", -excluded words.
    query: String,
    /// Only this conversation (id).
    #[arg(long)]
    conversation: Option<i64>,
    /// How many hits per page (at most 50).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Continue from the cursor a previous search printed.
    #[arg(long)]
    cursor: Option<String>,
    /// One JSON object per hit and line.
    #[arg(long)]
    json: bool,
}

/// Turns a snippet (HTML-escaped, hits in `<mark>`) into terminal text with
/// hits in `[…]`.
fn plain(snippet: &str) -> String {
    snippet
        .replace("<mark>", "[")
        .replace("</mark>", "]")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Prints one page of hits, best first.
pub async fn search(args: SearchArgs) -> anyhow::Result<()> {
    let client = args.client.logged_in()?;
    let opts = SearchOptions {
        conversation_id: args.conversation,
        limit: Some(args.limit),
        cursor: args.cursor.clone(),
        ..Default::default()
    };
    let found = client.search_messages(&args.query, &opts).await?;
    for hit in &found.hits {
        if args.json {
            println!("{}", serde_json::to_string(hit)?);
        } else {
            let m = &hit.message;
            println!(
                "conversation {} seq {} from {}: {}",
                m.conversation_id,
                m.seq,
                m.sender_id,
                plain(&hit.snippet)
            );
        }
    }
    if !args.json {
        if found.hits.is_empty() {
            eprintln!("no messages found");
        }
        if let Some(c) = &found.next_cursor {
            eprintln!("(more: --cursor {c})");
        }
    }
    args.client.save_if_changed(&client)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn snippets_read_as_plain_text() {
        assert_eq!(
            super::plain("a &lt;b&gt; <mark>fox</mark> &amp;amp;"),
            "a <b> [fox] &amp;"
        );
    }
}
