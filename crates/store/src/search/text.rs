//! How text becomes search tokens, how a query becomes token groups, and
//! how a hit's snippet is marked: one logic for both backends, so SQLite
//! (FTS5) and PostgreSQL (tsvector) index, match and mark exactly alike.
//!
//! Text is cut into runs by script:
//! - letters and digits of alphabetic scripts: one token per word, folded
//!   (NFKD, combining marks dropped, lower-cased); query words match as
//!   prefixes ("search" finds "searching") unless quoted;
//! - Han (Chinese characters, also Japanese kanji): words from jieba's
//!   bundled dictionary, in search mode for indexing (a long word also
//!   yields the shorter words inside it: "分布式" gives "分布" too) and in
//!   plain mode for queries; the index also holds every two adjacent
//!   characters of a run, so any stretch of two or more characters is
//!   found, also across jieba's word boundaries;
//! - kana and Hangul: overlapping character bigrams (the usual CJK
//!   approach when no dictionary is at hand), so any two or more adjacent
//!   characters are found; a one-character query run matches as a prefix.

use std::collections::HashSet;
use std::sync::OnceLock;

use jieba_rs::Jieba;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use crate::types::{HIT_END, HIT_START};

/// The jieba dictionary, loaded on first use. It is immutable data (like a
/// static table) and costs a fraction of a second to load, so one copy
/// serves every store in the process.
fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(Jieba::new)
}

/// Loads the dictionary now (from a blocking thread at open) so that the
/// first search or indexing round does not pay for it.
pub(crate) fn warm_up() {
    let _ = jieba();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Han,
    Kana,
    Hangul,
    Word,
    Gap,
}

fn script(c: char) -> Script {
    match c as u32 {
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3134F | 0x3005 => {
            Script::Han
        }
        0x3041..=0x309F | 0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Kana,
        0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => Script::Hangul,
        _ if c.is_alphanumeric() => Script::Word,
        _ => Script::Gap,
    }
}

/// A token and the bytes of the original text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub token: String,
    pub start: usize,
    pub end: usize,
}

/// Runs of one script: `(script, byte start, byte end)`.
fn runs(text: &str) -> Vec<(Script, usize, usize)> {
    let mut out: Vec<(Script, usize, usize)> = Vec::new();
    for (i, c) in text.char_indices() {
        let s = script(c);
        let end = i + c.len_utf8();
        match out.last_mut() {
            Some((last, _, e)) if *last == s && *e == i => *e = end,
            _ => out.push((s, i, end)),
        }
    }
    out.retain(|(s, _, _)| *s != Script::Gap);
    out
}

/// NFKD, without combining marks, lower-cased: "Café" and "CAFE" agree.
fn fold(word: &str) -> String {
    word.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// NFKC only, for Han, kana and Hangul: half-width kana become full-width,
/// and syllables and voiced kana keep their marks (NFKD would split them).
fn fold_cjk(word: &str) -> String {
    word.nfkc().collect()
}

/// Overlapping bigrams of a kana or Hangul run (the run itself when it is
/// one character long).
fn bigrams(text: &str, start: usize, end: usize, out: &mut Vec<Piece>) {
    let chars: Vec<(usize, char)> = text[start..end].char_indices().collect();
    if chars.len() == 1 {
        out.push(Piece {
            token: fold_cjk(&text[start..end]),
            start,
            end,
        });
        return;
    }
    for w in chars.windows(2) {
        let s = start + w[0].0;
        let e = start + w[1].0 + w[1].1.len_utf8();
        out.push(Piece {
            token: fold_cjk(&text[s..e]),
            start: s,
            end: e,
        });
    }
}

/// Pieces of a Han run, with whether a query should match them as prefixes.
///
/// Dictionary words come from jieba: for indexing in search mode (a word
/// also yields the dictionary words of two and three characters inside
/// it); for a query in plain mode, with a word of four or more characters
/// replaced by those shorter words (a text may hold the long word cut in
/// two, but the shorter words are indexed either way). Characters jieba
/// leaves alone, one by one (words it does not know, such as Japanese
/// kanji compounds), are taken as bigrams like kana, so "会議" still finds
/// "会議", and indexed one by one too; a lone one in a query is a unigram,
/// matched as a prefix.
fn han_pieces(text: &str, start: usize, end: usize, query: bool) -> Vec<(Piece, bool)> {
    let run = &text[start..end];
    let words = if query {
        jieba().cut(run, false)
    } else {
        jieba().cut_for_search(run, false)
    };
    let mut out = Vec::new();
    // A stretch of single characters jieba did not join: (start, end, count).
    let mut stretch: Option<(usize, usize, usize)> = None;
    let flush = |stretch: &mut Option<(usize, usize, usize)>, out: &mut Vec<(Piece, bool)>| {
        if let Some((s, e, n)) = stretch.take() {
            let mut pieces = Vec::new();
            bigrams(text, s, e, &mut pieces);
            out.extend(pieces.into_iter().map(|p| (p, query && n == 1)));
            if !query && n > 1 {
                // Each character by itself as well: a query's lone
                // character (matched as a prefix) must find "新" in "的新"
                // whichever neighbour jieba left it beside, so "新消息"
                // finds "…的新消息".
                for (i, c) in text[s..e].char_indices() {
                    let (cs, ce) = (s + i, s + i + c.len_utf8());
                    out.push((
                        Piece {
                            token: fold_cjk(&text[cs..ce]),
                            start: cs,
                            end: ce,
                        },
                        false,
                    ));
                }
            }
        }
    };
    for t in words {
        if t.word.trim().is_empty() {
            continue;
        }
        let (s, e) = (start + t.byte_start, start + t.byte_end);
        if t.word.chars().count() == 1 {
            stretch = match stretch {
                Some((ss, se, n)) if se == s => Some((ss, e, n + 1)),
                other => {
                    let mut other = other;
                    flush(&mut other, &mut out);
                    Some((s, e, 1))
                }
            };
            continue;
        }
        flush(&mut stretch, &mut out);
        let piece = |w: &str, s: usize, e: usize| Piece {
            token: fold_cjk(w),
            start: s,
            end: e,
        };
        if query && t.word.chars().count() >= 4 {
            let inner: Vec<_> = jieba()
                .cut_for_search(t.word, false)
                .into_iter()
                .filter(|w| w.word != t.word)
                .collect();
            if !inner.is_empty() {
                out.extend(
                    inner
                        .into_iter()
                        .map(|w| (piece(w.word, s + w.byte_start, s + w.byte_end), false)),
                );
                continue;
            }
        }
        out.push((piece(t.word, s, e), false));
    }
    flush(&mut stretch, &mut out);
    out
}

/// The tokens a text is indexed under, in order, with where each came from.
pub(crate) fn index_pieces(text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    for (s, start, end) in runs(text) {
        match s {
            Script::Word => out.push(Piece {
                token: fold(&text[start..end]),
                start,
                end,
            }),
            Script::Han => {
                let words = han_pieces(text, start, end, false);
                // Every two adjacent characters of the run as well, so a
                // query finds any stretch of two or more characters, also
                // one that crosses the words jieba cut ("式系" in
                // "分布式系统"); those jieba already gave are not repeated.
                let mut pairs = Vec::new();
                bigrams(text, start, end, &mut pairs);
                let given: HashSet<(usize, usize)> =
                    words.iter().map(|(w, _)| (w.start, w.end)).collect();
                pairs.retain(|b| !given.contains(&(b.start, b.end)));
                out.extend(words.into_iter().map(|(p, _)| p));
                out.extend(pairs);
            }
            Script::Kana | Script::Hangul => bigrams(text, start, end, &mut out),
            Script::Gap => {}
        }
    }
    out
}

/// The tokens a text is indexed under.
pub(crate) fn index_tokens(text: &str) -> Vec<String> {
    index_pieces(text).into_iter().map(|p| p.token).collect()
}

/// One token of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryToken {
    /// Folded, as indexed.
    pub text: String,
    /// Matches every indexed token that starts with `text`.
    pub prefix: bool,
}

/// One term of a query: a word or a quoted phrase, as tokens that must all
/// be present (next to each other when `phrase`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueryGroup {
    pub tokens: Vec<QueryToken>,
    pub phrase: bool,
    pub negated: bool,
}

/// A parsed search query: at least one positive group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchPlan {
    pub groups: Vec<QueryGroup>,
}

/// The terms of a web-search style query: `(text, quoted, excluded)`.
/// Words and `"quoted phrases"`; a leading `-` excludes.
fn terms(q: &str) -> Vec<(String, bool, bool)> {
    let mut terms = Vec::new();
    let mut rest = q.trim();
    while !rest.is_empty() {
        let (neg, r) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (term, quoted, r) = if let Some(r) = r.strip_prefix('"') {
            match r.find('"') {
                Some(end) => (&r[..end], true, &r[end + 1..]),
                None => (r, true, ""),
            }
        } else {
            let end = r.find(char::is_whitespace).unwrap_or(r.len());
            (&r[..end], false, &r[end..])
        };
        terms.push((term.to_string(), quoted, neg));
        rest = r.trim_start();
    }
    terms
}

/// Tokens of one query term, cut the way [`index_pieces`] cuts text.
fn query_tokens(term: &str, quoted: bool) -> (Vec<QueryToken>, bool) {
    let mut tokens = Vec::new();
    let mut all_words = true;
    for (s, start, end) in runs(term) {
        let run = &term[start..end];
        match s {
            Script::Word => tokens.push(QueryToken {
                text: fold(run),
                prefix: !quoted,
            }),
            Script::Han => {
                all_words = false;
                for (p, prefix) in han_pieces(term, start, end, true) {
                    tokens.push(QueryToken {
                        text: p.token,
                        prefix,
                    });
                }
            }
            Script::Kana | Script::Hangul => {
                all_words = false;
                let mut pieces = Vec::new();
                bigrams(term, start, end, &mut pieces);
                let one = run.chars().count() == 1;
                tokens.extend(pieces.into_iter().map(|p| QueryToken {
                    text: p.token,
                    prefix: one,
                }));
            }
            Script::Gap => {}
        }
    }
    (tokens, all_words)
}

/// Parses a query; `None` when it asks for nothing positive.
pub(crate) fn plan(q: &str) -> Option<SearchPlan> {
    let mut groups = Vec::new();
    for (term, quoted, negated) in terms(q) {
        let term: String = term
            .chars()
            .filter(|&c| c != HIT_START && c != HIT_END)
            .collect();
        let (tokens, all_words) = query_tokens(&term, quoted);
        if tokens.is_empty() {
            continue;
        }
        groups.push(QueryGroup {
            phrase: quoted && all_words && tokens.len() > 1,
            tokens,
            negated,
        });
    }
    if groups.iter().any(|g| !g.negated) {
        Some(SearchPlan { groups })
    } else {
        None
    }
}

impl SearchPlan {
    /// The FTS5 query (for a table whose column holds the space-joined
    /// tokens under the `ascii` tokenizer): tokens quoted, prefixes
    /// starred, groups ANDed, exclusions as `NOT`.
    pub(crate) fn fts5(&self) -> String {
        let token = |t: &QueryToken| {
            format!(
                "\"{}\"{}",
                t.text.replace('"', "\"\""),
                if t.prefix { "*" } else { "" }
            )
        };
        let group = |g: &QueryGroup| {
            let sep = if g.phrase { " + " } else { " AND " };
            let inner: Vec<String> = g.tokens.iter().map(token).collect();
            format!("({})", inner.join(sep))
        };
        let positive: Vec<String> = self
            .groups
            .iter()
            .filter(|g| !g.negated)
            .map(group)
            .collect();
        let mut out = positive.join(" AND ");
        for g in self.groups.iter().filter(|g| g.negated) {
            out = format!("({out}) NOT {}", group(g));
        }
        out
    }

    /// The PostgreSQL `tsquery` text (lexemes given verbatim, no parser
    /// or dictionary in between): `&` between tokens, `<->` inside
    /// phrases, `:*` for prefixes, `!` for exclusions.
    pub(crate) fn tsquery(&self) -> String {
        let token = |t: &QueryToken| {
            format!(
                "'{}'{}",
                t.text.replace('\\', "\\\\").replace('\'', "''"),
                if t.prefix { ":*" } else { "" }
            )
        };
        let group = |g: &QueryGroup| {
            let sep = if g.phrase { " <-> " } else { " & " };
            let inner: Vec<String> = g.tokens.iter().map(token).collect();
            format!("({})", inner.join(sep))
        };
        let parts: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                if g.negated {
                    format!("!{}", group(g))
                } else {
                    group(g)
                }
            })
            .collect();
        parts.join(" & ")
    }

    /// Whether an indexed token is one of the positive query tokens.
    fn marks(&self, token: &str) -> bool {
        self.groups.iter().filter(|g| !g.negated).any(|g| {
            g.tokens.iter().any(|t| {
                if t.prefix {
                    token.starts_with(&t.text)
                } else {
                    token == t.text
                }
            })
        })
    }

    /// The snippet of a hit: up to [`SNIPPET_CHARS`] characters of `text`
    /// around the first hit, HTML-escaped, each hit in `<mark>`…`</mark>`,
    /// `…` where the text was cut.
    pub(crate) fn snippet(&self, text: &str) -> String {
        let text: String = text
            .chars()
            .filter(|&c| c != HIT_START && c != HIT_END)
            .collect();
        let mut spans: Vec<(usize, usize)> = index_pieces(&text)
            .into_iter()
            .filter(|p| self.marks(&p.token))
            .map(|p| (p.start, p.end))
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::new();
        for (s, e) in spans {
            match merged.last_mut() {
                Some((_, le)) if s <= *le => *le = (*le).max(e),
                _ => merged.push((s, e)),
            }
        }
        // The window: whole text when short, else from a little before the
        // first hit.
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let chars = bounds.len() - 1;
        let (from, to) = if chars <= SNIPPET_CHARS {
            (0, text.len())
        } else {
            let first = merged.first().map_or(0, |(s, _)| *s);
            let first_char = bounds.partition_point(|&b| b < first);
            let lead = first_char.saturating_sub(SNIPPET_LEAD);
            let start = lead.min(chars - SNIPPET_CHARS);
            (bounds[start], bounds[start + SNIPPET_CHARS])
        };
        let mut raw = String::with_capacity(to - from + 16);
        if from > 0 {
            raw.push('…');
        }
        let mut at = from;
        for (s, e) in merged {
            let (s, e) = (s.max(from), e.min(to));
            if s >= e {
                continue;
            }
            raw.push_str(&text[at..s]);
            raw.push(HIT_START);
            raw.push_str(&text[s..e]);
            raw.push(HIT_END);
            at = e;
        }
        raw.push_str(&text[at..to]);
        if to < text.len() {
            raw.push('…');
        }
        crate::types::render_snippet(&raw)
    }
}

/// Longest snippet, in characters.
pub(crate) const SNIPPET_CHARS: usize = 96;
/// Characters of context kept before the first hit.
const SNIPPET_LEAD: usize = 24;

/// The searchable text of a message: a text message's text or a media
/// message's caption; `None` for anything else.
pub(crate) fn searchable_text(kind: &str, body: &serde_json::Value) -> Option<String> {
    let field = match kind {
        "text" => "text",
        "image" | "voice" | "file" => "caption",
        _ => return None,
    };
    body.get(field)?.as_str().map(str::to_owned)
}

/// The PostgreSQL `tsvector` text of some tokens: each lexeme with its
/// position, verbatim (no parser or dictionary in between).
pub(crate) fn tsvector(tokens: &[String]) -> String {
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if !out.is_empty() {
            out.push(' ');
        }
        // Positions above 16383 are clamped by PostgreSQL anyway.
        let pos = (i + 1).min(16383);
        out.push('\'');
        out.push_str(&t.replace('\\', "\\\\").replace('\'', "''"));
        out.push_str("':");
        out.push_str(&pos.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(t: &str) -> Vec<String> {
        index_tokens(t)
    }

    #[test]
    fn chinese_words_inside_a_sentence_are_tokens() {
        let t = toks("我们明天下午开会讨论分布式系统");
        for w in ["开会", "分布式", "系统", "明天", "式系", "论分", "天下"] {
            assert!(t.contains(&w.to_string()), "{w} in {t:?}");
        }
        // A pair jieba gave as a word is not indexed twice.
        assert_eq!(t.iter().filter(|w| *w == "开会").count(), 1, "{t:?}");
        let p = plan("开会").expect("plan");
        assert_eq!(p.fts5(), r#"("开会")"#);
        // A long query word asks for the shorter words inside it, which
        // the text has however jieba cut it there.
        assert_eq!(
            plan("分布式系统").expect("plan").fts5(),
            r#"("分布" AND "布式" AND "系统" AND "分布式")"#
        );
        // Kanji compounds jieba does not know are bigrams, on both sides.
        let t = toks("明日の会議で検索機能について話します");
        for w in ["会議", "検索", "機能", "つい"] {
            assert!(t.contains(&w.to_string()), "{w} in {t:?}");
        }
        assert_eq!(plan("検索").expect("plan").fts5(), r#"("検索")"#);
        assert_eq!(plan("还").expect("plan").fts5(), r#"("还"*)"#);
    }

    #[test]
    fn kana_and_hangul_are_bigrams_and_words_are_folded() {
        let t = toks("コンピュータ 회의를 Café-Searching");
        for w in ["コン", "ータ", "회의", "의를", "cafe", "searching"] {
            assert!(t.contains(&w.to_string()), "{w} in {t:?}");
        }
        let p = plan("SEARCH \"exact words\" -회").expect("plan");
        assert_eq!(
            p.fts5(),
            r#"(("search"*) AND ("exact" + "words")) NOT ("회"*)"#
        );
        assert_eq!(
            p.tsquery(),
            "('search':*) & ('exact' <-> 'words') & !('회':*)"
        );
        assert!(plan("-only").is_none());
        assert!(plan("  ...  \"").is_none());
    }

    #[test]
    fn snippets_mark_hits_and_escape() {
        let p = plan("fox").expect("plan");
        assert_eq!(
            p.snippet("<b>fox</b> & \"co\" \u{2}x"),
            "&lt;b&gt;<mark>fox</mark>&lt;/b&gt; &amp; &quot;co&quot; x"
        );
        let p = plan("分布式").expect("plan");
        assert_eq!(
            p.snippet("我们明天下午开会讨论分布式系统"),
            "我们明天下午开会讨论<mark>分布式</mark>系统"
        );
        let long = format!("{} needle {}", "a ".repeat(100), "b ".repeat(100));
        let s = plan("needle").expect("plan").snippet(&long);
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("<mark>needle</mark>"), "{s}");
        assert!(s.chars().count() < SNIPPET_CHARS + 20, "{s}");
    }

    #[test]
    fn tsvector_text_is_verbatim() {
        assert_eq!(
            tsvector(&["a'b".into(), "开会".into()]),
            "'a''b':1 '开会':2"
        );
    }
}
