//! Media over the real server: uploads and downloads with checksums,
//! ranges, caching, type checks, size limit and quota, access rules,
//! metadata stripping, thumbnails, and the checks on media messages.

use std::time::Duration;

use crate::support::*;
use confab_proto::ErrorCode;
use confab_sdk::proto::media::UploadedMedia;
use confab_sdk::proto::MessageKind;
use confab_sdk::Client;
use serde_json::json;
use sha2::{Digest, Sha256};

fn hex_sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token(c: &Client) -> String {
    c.session().expect("session").access_token
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 99]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode jpeg");
    out.into_inner()
}

const GPS_MARK: &[u8] = b"GPSLatitude 52.520008 N";

/// A JPEG with an APP1 EXIF segment (orientation tag and a GPS marker
/// string in its data) right after SOI.
fn jpeg_with_exif(w: u32, h: u32, orientation: u16) -> Vec<u8> {
    let plain = jpeg(w, h);
    let mut tiff = b"II\x2a\0\x08\0\0\0".to_vec();
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(GPS_MARK);
    let mut seg = b"Exif\0\0".to_vec();
    seg.extend_from_slice(&tiff);
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((seg.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&seg);
    out.extend_from_slice(&plain[2..]);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn get(
    app: &TestApp,
    who: &Client,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app
        .http()
        .get(format!("{}{path}", app.base_url))
        .bearer_auth(token(who));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

fn code_of(e: &confab_sdk::Error) -> Option<ErrorCode> {
    e.code()
}

#[tokio::test]
async fn uploads_round_trip_with_ranges_and_caching() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let up = ann
        .upload_bytes(data.clone(), "application/octet-stream")
        .await
        .expect("upload");
    assert_eq!(up.size, data.len() as u64);
    assert_eq!(up.sha256, hex_sha(&data));
    assert_eq!(up.kind, "file");
    assert_eq!(up.mime, "application/octet-stream");
    assert!(
        up.media_id.len() >= 16
            && up
                .media_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(ann.media_bytes(&up.media_id).await.expect("download"), data);

    // Identical content: a new id, the same blob, stored once.
    let again = ann
        .upload_bytes(data.clone(), "application/octet-stream")
        .await
        .expect("upload again");
    assert_ne!(again.media_id, up.media_id);
    assert_eq!(again.sha256, up.sha256);
    let blob = app
        .data_dir
        .join("blobs")
        .join(&up.sha256[..2])
        .join(&up.sha256);
    assert_eq!(
        std::fs::metadata(&blob).expect("blob file").len(),
        data.len() as u64
    );

    // Headers of a file download.
    let path = format!("/v1/media/{}", up.media_id);
    let r = get(&app, &ann, &path, &[]).await;
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    let etag = format!("\"{}\"", up.sha256);
    assert_eq!(h["etag"], etag.as_str());
    assert_eq!(h["cache-control"], "private, max-age=31536000, immutable");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["accept-ranges"], "bytes");
    assert!(h["content-disposition"]
        .to_str()
        .expect("ascii")
        .starts_with("attachment"));
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.expect("body").as_ref(), data.as_slice());

    // Ranges.
    let r = get(&app, &ann, &path, &[("range", "bytes=1000-1999")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/300000");
    assert_eq!(r.bytes().await.expect("body").as_ref(), &data[1000..2000]);
    let r = get(&app, &ann, &path, &[("range", "bytes=299990-")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.expect("body").as_ref(), &data[299_990..]);
    let r = get(&app, &ann, &path, &[("range", "bytes=-10")]).await;
    assert_eq!(r.bytes().await.expect("body").as_ref(), &data[299_990..]);
    let r = get(&app, &ann, &path, &[("range", "bytes=300000-")]).await;
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */300000");

    // Conditional requests.
    let r = get(&app, &ann, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), 304);
    assert!(r.bytes().await.expect("body").is_empty());
    let r = get(&app, &ann, &path, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status(), 200);

    // A streamed file upload and a download to a file, resumed from a
    // partial file left by an interrupted download.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("photo.png");
    let image = png(300, 200);
    std::fs::write(&src, &image).expect("write");
    let up = ann
        .upload_file(&src, None, None)
        .await
        .expect("upload file");
    assert_eq!((up.kind.as_str(), up.mime.as_str()), ("image", "image/png"));
    assert_eq!((up.width, up.height), (Some(300), Some(200)));
    assert_eq!(up.sha256, hex_sha(&image));
    let dest = dir.path().join("copy.png");
    std::fs::write(dir.path().join("copy.png.part"), &image[..1000]).expect("part");
    let n = ann
        .download_media(&up.media_id, &dest, None)
        .await
        .expect("download");
    assert_eq!(n, image.len() as u64);
    assert_eq!(hex_sha(&std::fs::read(&dest).expect("read")), up.sha256);
    let r = get(&app, &ann, &format!("/v1/media/{}", up.media_id), &[]).await;
    assert_eq!(r.headers()["content-disposition"], "inline");
    assert_eq!(r.headers()["content-type"], "image/png");

    // Unknown ids.
    let r = get(&app, &ann, "/v1/media/nope", &[]).await;
    assert_eq!(r.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn declared_types_must_match_and_html_is_never_served_as_html() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let e = ann
        .upload_bytes(png(4, 4), "image/jpeg")
        .await
        .expect_err("png declared as jpeg");
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest));
    assert_eq!(e.status(), Some(400));
    let e = ann
        .upload_bytes(b"not an image at all".to_vec(), "image/png")
        .await
        .expect_err("junk declared as png");
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest));
    let e = ann
        .upload_bytes(b"plain text".to_vec(), "audio/ogg")
        .await
        .expect_err("text declared as audio");
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest));
    // A JPEG header with nothing readable after it.
    let e = ann
        .upload_bytes(b"\xFF\xD8\xFF\xE0garbage".to_vec(), "image/jpeg")
        .await
        .expect_err("broken jpeg");
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest));

    let html = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>".to_vec();
    let up = ann
        .upload_bytes(html, "text/html")
        .await
        .expect("stored as a file");
    assert_eq!(
        (up.kind.as_str(), up.mime.as_str()),
        ("file", "application/octet-stream")
    );
    let r = get(&app, &ann, &format!("/v1/media/{}", up.media_id), &[]).await;
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert!(r.headers()["content-disposition"]
        .to_str()
        .expect("ascii")
        .starts_with("attachment"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");

    // A browser form upload.
    let form = reqwest::multipart::Form::new().text("note", "hello").part(
        "file",
        reqwest::multipart::Part::bytes(png(10, 5))
            .file_name("x.png")
            .mime_str("image/png")
            .expect("mime"),
    );
    let r = app
        .http()
        .post(format!("{}/v1/media", app.base_url))
        .bearer_auth(token(&ann))
        .multipart(form)
        .send()
        .await
        .expect("multipart");
    assert_eq!(r.status(), 201);
    let up: UploadedMedia = r.json().await.expect("json");
    assert_eq!(
        (up.width, up.height, up.kind.as_str()),
        (Some(10), Some(5), "image")
    );
    app.stop().await;
}

#[tokio::test]
async fn oversize_uploads_are_refused_without_buffering_and_quota_holds() {
    const MAX: u64 = 1024 * 1024;
    let app = spawn_app_with(|c| {
        c.media.max_upload_bytes = MAX;
        c.media.user_quota_bytes = 1_500_000;
    })
    .await;
    let (ann, _) = app.user("ann").await;

    // Declared too large: refused before reading.
    let e = ann
        .upload_bytes(vec![1u8; MAX as usize + 1], "application/octet-stream")
        .await
        .expect_err("too large");
    assert_eq!(code_of(&e), Some(ErrorCode::MediaTooLarge));
    assert_eq!(e.status(), Some(413));

    // Streamed without a length: refused once the limit is passed, with the
    // remaining MiB never read.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..32).map(|_| Ok(vec![7u8; 64 * 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = app
        .http()
        .post(format!("{}/v1/media", app.base_url))
        .bearer_auth(token(&ann))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await;
    match r {
        Ok(r) => {
            assert_eq!(r.status(), 413);
            let body: serde_json::Value = r.json().await.expect("json");
            assert_eq!(body["error"]["code"], "media_too_large");
        }
        // The server may close the connection before the client has sent
        // everything; it then never sees the answer.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let tmp = app.data_dir.join("tmp-uploads");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary files left: {left:?}");

    // Quota: 1.5 MB in all.
    ann.upload_bytes(vec![1u8; 900_000], "application/octet-stream")
        .await
        .expect("first upload");
    let e = ann
        .upload_bytes(vec![2u8; 900_000], "application/octet-stream")
        .await
        .expect_err("over quota");
    assert_eq!(code_of(&e), Some(ErrorCode::MediaTooLarge));
    assert!(e.to_string().contains("quota"), "{e}");
    ann.upload_bytes(vec![3u8; 500_000], "application/octet-stream")
        .await
        .expect("within quota");
    app.stop().await;
}

#[tokio::test]
async fn only_the_uploader_and_members_who_saw_it_may_fetch_media() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_u) = app.user("bob").await;
    let (cat, cat_u) = app.user("cat").await;
    let (dan, _) = app.user("dan").await;
    let (eve, eve_u) = app.user("eve").await;
    let g = ann
        .create_group("pics", &[bob_u.id, cat_u.id])
        .await
        .expect("group");
    let up = ann
        .upload_bytes(png(640, 480), "image/png")
        .await
        .expect("upload");
    let path = format!("/v1/media/{}", up.media_id);
    for who in [&bob, &cat, &dan] {
        assert_eq!(
            get(&app, who, &path, &[]).await.status(),
            404,
            "not shared yet"
        );
    }
    // cat is kicked, then the image is shared, then eve joins.
    ann.remove_member(g.id, cat_u.id).await.expect("kick");
    ann.send_image(g.id, &up, Some("look"))
        .await
        .expect("send image");
    ann.add_members(g.id, &[eve_u.id]).await.expect("add eve");
    assert_eq!(get(&app, &ann, &path, &[]).await.status(), 200);
    assert_eq!(get(&app, &bob, &path, &[]).await.status(), 200);
    assert_eq!(
        bob.media_bytes(&up.media_id).await.expect("bob"),
        png(640, 480)
    );
    for who in [&cat, &dan, &eve] {
        let r = get(&app, who, &path, &[]).await;
        assert_eq!(r.status(), 404);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "not_found");
    }
    // Anonymous requests are unauthorized.
    let r = app
        .http()
        .get(format!("{}{path}", app.base_url))
        .send()
        .await
        .expect("anon");
    assert_eq!(r.status(), 401);

    // The thumbnail appears (made in the background), for bob too.
    let deadline = tokio::time::Instant::now() + WAIT;
    let thumb = loop {
        match bob.media_thumbnail(&up.media_id).await {
            Ok(t) => break t,
            Err(e) => {
                assert_eq!(e.status(), Some(404), "{e}");
                assert!(tokio::time::Instant::now() < deadline, "no thumbnail");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let t = image::load_from_memory(&thumb).expect("thumbnail decodes");
    assert_eq!((t.width(), t.height()), (320, 240));
    assert_eq!(
        get(&app, &dan, &format!("{path}/thumbnail"), &[])
            .await
            .status(),
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn exif_is_stripped_and_orientation_applied() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_u) = app.user("bob").await;
    let conv = direct(&ann, &bob_u).await;

    let tagged = jpeg_with_exif(64, 32, 1);
    assert!(contains(&tagged, GPS_MARK));
    let up = ann
        .upload_bytes(tagged.clone(), "image/jpeg")
        .await
        .expect("upload");
    assert_eq!((up.width, up.height), (Some(64), Some(32)));
    assert_ne!(
        up.sha256,
        hex_sha(&tagged),
        "what is stored is the cleaned image"
    );
    ann.send_image(conv.id, &up, None).await.expect("share");
    let got = bob.media_bytes(&up.media_id).await.expect("download");
    assert_eq!(hex_sha(&got), up.sha256);
    assert!(!contains(&got, GPS_MARK) && !contains(&got, b"Exif"));
    // Only the metadata went: the pixels are the same bytes.
    assert_eq!(got, jpeg(64, 32));

    // Rotated 90° by its EXIF orientation: stored upright.
    let rotated = jpeg_with_exif(64, 32, 6);
    let up = ann
        .upload_bytes(rotated, "image/jpeg")
        .await
        .expect("upload");
    assert_eq!((up.width, up.height), (Some(32), Some(64)));
    let got = ann.media_bytes(&up.media_id).await.expect("download");
    assert!(!contains(&got, GPS_MARK));
    let img = image::load_from_memory(&got).expect("decodes");
    assert_eq!((img.width(), img.height()), (32, 64));
    app.stop().await;
}

#[tokio::test]
async fn media_messages_must_reference_the_senders_own_matching_media() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (bob, bob_u) = app.user("bob").await;
    let conv = direct(&ann, &bob_u).await;
    let img = ann
        .upload_bytes(png(8, 8), "image/png")
        .await
        .expect("image");
    let file = ann
        .upload_bytes(b"%PDF-1.7\n...".to_vec(), "application/pdf")
        .await
        .expect("file");
    assert_eq!(
        (file.kind.as_str(), file.mime.as_str()),
        ("file", "application/pdf")
    );
    let bobs = bob
        .upload_bytes(png(2, 2), "image/png")
        .await
        .expect("bob's");

    let send = |kind: MessageKind, body: serde_json::Value| {
        let ann = ann.clone();
        async move {
            ann.send_http(conv.id, &confab_sdk::new_client_msg_id(), kind, body)
                .await
        }
    };
    // A file as an image: bad_request.
    let e = send(
        MessageKind::Image,
        json!({"media_id": file.media_id, "width": 1, "height": 1}),
    )
    .await
    .expect_err("file as image");
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest));
    // An image as a voice note: bad_request.
    let e = send(
        MessageKind::Voice,
        json!({"media_id": img.media_id, "duration_ms": 1000}),
    )
    .await
    .expect_err("image as voice");
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest));
    // Unknown media, and someone else's: not_found.
    for id in ["nope", bobs.media_id.as_str()] {
        let e = send(
            MessageKind::Image,
            json!({"media_id": id, "width": 2, "height": 2}),
        )
        .await
        .expect_err("not mine");
        assert_eq!(code_of(&e), Some(ErrorCode::NotFound));
    }
    // A body that misstates the upload: bad_request (receivers show it).
    for (kind, body) in [
        (
            MessageKind::Image,
            json!({"media_id": img.media_id, "width": 800, "height": 8}),
        ),
        (
            MessageKind::File,
            json!({"media_id": file.media_id, "name": "a.pdf", "size": 1, "mime": "application/pdf"}),
        ),
        (
            MessageKind::File,
            json!({"media_id": file.media_id, "name": "a.exe", "size": file.size, "mime": "text/html"}),
        ),
    ] {
        let e = send(kind, body.clone()).await.expect_err("misstated");
        assert_eq!(code_of(&e), Some(ErrorCode::BadRequest), "{body}");
    }
    // Fine: an image as an image, anything as a file.
    ann.send_image(conv.id, &img, Some("hi"))
        .await
        .expect("image");
    ann.send_file(conv.id, &file, "doc.pdf")
        .await
        .expect("file");
    ann.send_file(conv.id, &img, "pic.png")
        .await
        .expect("image as file");

    // Over the WebSocket too.
    let conn = connect(&ann).await;
    let e = conn
        .send(
            conv.id,
            MessageKind::Image,
            json!({"media_id": file.media_id, "width": 1, "height": 1}),
        )
        .await
        .expect_err("ws: file as image");
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest));
    conn.send(
        conv.id,
        MessageKind::Image,
        json!({"media_id": img.media_id, "width": 8, "height": 8}),
    )
    .await
    .expect("ws image");
    // bob can now fetch what was shared with him.
    assert_eq!(
        bob.media_bytes(&file.media_id).await.expect("file"),
        b"%PDF-1.7\n..."
    );
    app.stop().await;
}

#[tokio::test]
async fn cli_sends_images_and_files_and_downloads_them() {
    let app = spawn_app().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ann_s, bob_s) = (tmp.path().join("ann.json"), tmp.path().join("bob.json"));
    for (name, session) in [("ann", &ann_s), ("bob", &bob_s)] {
        cli_register_and_login(&app.base_url, session, name).await;
    }
    let pic = tmp.path().join("pic.png");
    std::fs::write(&pic, png(50, 40)).expect("write");
    let doc = tmp.path().join("notes.bin");
    let doc_bytes: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&doc, &doc_bytes).expect("write");

    let mut send = cli(&app.base_url, &ann_s);
    send.arg("send-image")
        .arg("bob")
        .arg(&pic)
        .args(["--caption", "hi", "--json"]);
    let out: serde_json::Value = serde_json::from_str(cli_ok(send).await.trim()).expect("json");
    assert_eq!(out["media"]["width"], 50);
    let image_id = out["media"]["media_id"].as_str().expect("id").to_owned();

    let mut send = cli(&app.base_url, &ann_s);
    send.arg("send-file").arg("bob").arg(&doc).arg("--json");
    let out: serde_json::Value = serde_json::from_str(cli_ok(send).await.trim()).expect("json");
    let file_id = out["media"]["media_id"].as_str().expect("id").to_owned();
    assert_eq!(out["media"]["sha256"], hex_sha(&doc_bytes));

    // A file is not an image.
    let mut wrong = cli(&app.base_url, &ann_s);
    wrong.arg("send-image").arg("bob").arg(&doc);
    let out = wrong.output().await.expect("run");
    assert!(!out.status.success());

    // bob downloads both.
    let got = tmp.path().join("got.bin");
    let mut dl = cli(&app.base_url, &bob_s);
    dl.arg("download").arg(&file_id).arg(&got);
    assert!(cli_ok(dl).await.contains("2000000 bytes"));
    assert_eq!(
        hex_sha(&std::fs::read(&got).expect("read")),
        hex_sha(&doc_bytes)
    );
    let got = tmp.path().join("got.png");
    let mut dl = cli(&app.base_url, &bob_s);
    dl.arg("download").arg(&image_id).arg(&got);
    cli_ok(dl).await;
    assert_eq!(std::fs::read(&got).expect("read"), png(50, 40));
    app.stop().await;
}

// --- tus 1.0 resumable uploads ---------------------------------------------

fn tus(req: reqwest::RequestBuilder, who: &Client) -> reqwest::RequestBuilder {
    req.bearer_auth(token(who)).header("tus-resumable", "1.0.0")
}

#[tokio::test]
async fn tus_uploads_resume_after_an_interruption() {
    let app = spawn_app_with(|c| c.media.max_upload_bytes = 8 * 1024 * 1024).await;
    let (ann, _) = app.user("ann").await;
    let (bob, _) = app.user("bob").await;
    let http = app.http();
    let base = format!("{}/v1/media/uploads/", app.base_url);

    let r = http
        .request(reqwest::Method::OPTIONS, &base)
        .send()
        .await
        .expect("options");
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["tus-resumable"], "1.0.0");
    assert_eq!(r.headers()["tus-version"], "1.0.0");
    assert_eq!(r.headers()["tus-extension"], "creation,termination");
    assert_eq!(r.headers()["tus-max-size"], "8388608");

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 239) as u8).collect();
    // Too big, and the wrong protocol version.
    let r = tus(http.post(&base), &ann)
        .header("upload-length", "9000000")
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 413);
    let r = http
        .post(&base)
        .bearer_auth(token(&ann))
        .header("tus-resumable", "0.2.2")
        .header("upload-length", "10")
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 412);

    let r = tus(http.post(&base), &ann)
        .header("upload-length", data.len().to_string())
        .header(
            "upload-metadata",
            "filetype YXBwbGljYXRpb24vb2N0ZXQtc3RyZWFt",
        )
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let url = format!("{}{location}", app.base_url);
    let id = location.rsplit('/').next().expect("id").to_owned();

    // A PATCH whose connection breaks after 1 MiB of its 3 MB: sent by
    // hand so that the break comes exactly there.
    const CUT: usize = 1024 * 1024;
    let head_offset = || async {
        let r = tus(http.head(&url), &ann).send().await.expect("head");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["upload-length"], "3000000");
        assert_eq!(r.headers()["cache-control"], "no-store");
        r.headers()["upload-offset"]
            .to_str()
            .expect("ascii")
            .parse::<u64>()
            .expect("number")
    };
    let mut sock = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let request = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n\
         Upload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        app.addr,
        token(&ann),
        data.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut sock, request.as_bytes())
        .await
        .expect("write");
    tokio::io::AsyncWriteExt::write_all(&mut sock, &data[..CUT])
        .await
        .expect("write");
    let deadline = tokio::time::Instant::now() + WAIT;
    while head_offset().await < CUT as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server never got 1 MiB"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(sock);

    // Until the server is done with the broken request the upload is
    // locked (423, a client retries); then a wrong offset is a conflict.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = tus(http.patch(&url), &ann)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", "3")
            .body(data[3..10].to_vec())
            .send()
            .await
            .expect("patch");
        if r.status() == 423 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(r.status(), 409);
        break;
    }
    // The server kept exactly what arrived; others cannot see the upload.
    let offset = head_offset().await;
    assert_eq!(offset, CUT as u64);
    let r = tus(http.head(&url), &bob).send().await.expect("head");
    assert_eq!(r.status(), 404);

    // The right offset finishes the upload.
    let r = tus(http.patch(&url), &ann)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset.to_string())
        .body(data[offset as usize..].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["upload-offset"], "3000000");
    assert_eq!(r.headers()["confab-media-id"], id.as_str());
    let got = ann.media_bytes(&id).await.expect("download");
    assert_eq!(hex_sha(&got), hex_sha(&data));
    let r = tus(http.head(&url), &ann).send().await.expect("head");
    assert_eq!(r.headers()["upload-offset"], "3000000");

    // Termination.
    let r = tus(http.post(&base), &ann)
        .header("upload-length", "100")
        .send()
        .await
        .expect("create");
    let url2 = format!(
        "{}{}",
        app.base_url,
        r.headers()["location"].to_str().expect("ascii")
    );
    let r = tus(http.delete(&url2), &bob).send().await.expect("delete");
    assert_eq!(r.status(), 404, "not bob's");
    let r = tus(http.delete(&url2), &ann).send().await.expect("delete");
    assert_eq!(r.status(), 204);
    let r = tus(http.head(&url2), &ann).send().await.expect("head");
    assert_eq!(r.status(), 404);
    app.stop().await;
}

/// The Python tus client (`tuspy`, installed by scripts/test) uploads in
/// chunks, stops half way, and a second client resumes from the server's
/// offset.
#[tokio::test]
async fn a_real_tus_client_uploads_and_resumes() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("photo.png");
    let image = png(700, 500);
    std::fs::write(&path, &image).expect("write");
    let script = r#"
import sys
from tusclient import client
url, token, path, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = client.TusClient(url, headers={"Authorization": "Bearer " + token})
first = c.uploader(path, chunk_size=64 * 1024, metadata={"filetype": "image/png", "filename": "photo.png"})
first.upload(stop_at=size // 2)
print("stopped at", first.offset, file=sys.stderr)
second = c.uploader(path, url=first.url, chunk_size=64 * 1024)
assert second.offset == first.offset, (second.offset, first.offset)
second.upload()
print(second.url)
"#;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(format!("{}/v1/media/uploads/", app.base_url))
        .arg(token(&ann))
        .arg(&path)
        .arg(image.len().to_string())
        .output()
        .await
        .expect("python3 (with tuspy: scripts/test installs it)");
    assert!(
        out.status.success(),
        "tus client failed (is tuspy installed? scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let id = url.rsplit('/').next().expect("id").to_owned();
    let got = ann.media_bytes(&id).await.expect("download");
    assert_eq!(got, image);
    let r = get(&app, &ann, &format!("/v1/media/{id}"), &[]).await;
    assert_eq!(r.headers()["content-type"], "image/png");
    app.stop().await;
}

#[tokio::test]
async fn the_sdk_resumes_a_tus_upload_from_the_servers_offset() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("big.bin");
    let data: Vec<u8> = (0..9_000_000u32).map(|i| (i % 233) as u8).collect();
    std::fs::write(&path, &data).expect("write");

    // An earlier run got 5 MB in and was stopped.
    let http = app.http();
    let r = tus(
        http.post(format!("{}/v1/media/uploads/", app.base_url)),
        &ann,
    )
    .header("upload-length", data.len().to_string())
    .send()
    .await
    .expect("create");
    let url = format!(
        "{}{}",
        app.base_url,
        r.headers()["location"].to_str().expect("ascii")
    );
    let r = tus(http.patch(&url), &ann)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body(data[..5_000_000].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 204);

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let progress: confab_sdk::Progress = std::sync::Arc::new(move |n| {
        s.lock().expect("lock").push(n);
    });
    let created = std::sync::atomic::AtomicBool::new(false);
    let up = ann
        .upload_resumable(
            &path,
            None,
            Some(&url),
            &|_| created.store(true, std::sync::atomic::Ordering::SeqCst),
            Some(progress),
        )
        .await
        .expect("resume");
    assert!(
        !created.load(std::sync::atomic::Ordering::SeqCst),
        "resumed, not recreated"
    );
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen, vec![9_000_000], "one 4 MB PATCH from 5 MB");
    assert_eq!(up.sha256, hex_sha(&data));
    assert_eq!(up.size, 9_000_000);
    // Resuming a finished upload just answers its media.
    let again = ann
        .upload_resumable(&path, None, Some(&url), &|_| {}, None)
        .await
        .expect("finished");
    assert_eq!(again.media_id, up.media_id);
    app.stop().await;
}

/// A minimal Ogg Opus stream: an `OpusHead` page and a last page whose
/// granule position says `ms` (plus the 312-sample pre-skip).
fn ogg_opus(ms: u64) -> Vec<u8> {
    fn page(kind: u8, granule: u64, seq: u32, packet: &[u8]) -> Vec<u8> {
        let mut p = b"OggS".to_vec();
        p.push(0);
        p.push(kind);
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(&seq.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.push(1);
        p.push(packet.len() as u8);
        p.extend_from_slice(packet);
        p
    }
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(1);
    head.extend_from_slice(&312u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&[0, 0, 0]);
    let mut out = page(2, 0, 0, &head);
    out.extend(page(0, 0, 1, b"OpusTags\0\0\0\0\0\0\0\0"));
    out.extend(page(4, ms * 48 + 312, 2, &[0xFC; 40]));
    out
}

#[tokio::test]
async fn voice_notes_are_checked_for_a_plausible_duration() {
    let app = spawn_app().await;
    let (ann, _) = app.user("ann").await;
    let (_bob, bob_u) = app.user("bob").await;
    let conv = direct(&ann, &bob_u).await;
    let up = ann
        .upload_bytes(ogg_opus(5_000), "audio/ogg; codecs=opus")
        .await
        .expect("voice");
    assert_eq!(
        (up.kind.as_str(), up.mime.as_str(), up.duration_ms),
        ("voice", "audio/ogg", Some(5_000))
    );
    ann.send_http(
        conv.id,
        &confab_sdk::new_client_msg_id(),
        MessageKind::Voice,
        json!({"media_id": up.media_id, "duration_ms": 5000}),
    )
    .await
    .expect("voice message");
    let r = get(&app, &ann, &format!("/v1/media/{}", up.media_id), &[]).await;
    assert_eq!(r.headers()["content-type"], "audio/ogg");
    assert_eq!(r.headers()["content-disposition"], "inline");
    let e = ann
        .upload_bytes(ogg_opus(20 * 60 * 1000), "audio/ogg")
        .await
        .expect_err("20 minutes");
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest));
    let e = ann
        .upload_bytes(ogg_opus(5_000), "audio/mp4")
        .await
        .expect_err("ogg declared as m4a");
    assert_eq!(code_of(&e), Some(ErrorCode::BadRequest));
    app.stop().await;
}

// --- the binary with --blobs s3://… against a real S3-compatible server ---

/// moto's S3 server on a free port; killed on drop.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 with moto[server] (scripts/test installs it)");
    let moto = Moto { child, port };
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "moto did not start: is moto[server] installed? (scripts/test installs it)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    moto
}

#[tokio::test]
async fn the_server_keeps_blobs_in_s3_when_told_to() {
    let moto = start_moto().await;
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/confab-media"))
        .send()
        .await
        .expect("create bucket");
    assert!(r.status().is_success(), "{}", r.status());
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .args([
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
            "--blobs",
            "s3://confab-media/node-a",
        ])
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("CONFAB_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn confab serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("server starts in time")
        .expect("read")
        .expect("a line");
    let base = line
        .strip_prefix("confab listening on ")
        .expect("listening line")
        .to_owned();

    let ann = Client::new(&base);
    ann.register("ann", PASSWORD, None).await.expect("register");
    ann.login("ann", PASSWORD, None).await.expect("login");
    let image = png(400, 300);
    let up = ann
        .upload_bytes(image.clone(), "image/png")
        .await
        .expect("upload");
    assert_eq!(
        ann.media_bytes(&up.media_id).await.expect("download"),
        image
    );
    // Not in the data directory: in the bucket (checked at the end).
    assert!(!tmp.path().join("blobs").exists());
    // Ranges and thumbnails work from S3 too.
    let r = app_get(
        &base,
        &ann,
        &format!("/v1/media/{}", up.media_id),
        ("range", "bytes=10-19"),
    )
    .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.expect("body").as_ref(), &image[10..20]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while ann.media_thumbnail(&up.media_id).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "no thumbnail");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // With the S3 server gone the bytes cannot be had: they live there.
    drop(moto);
    let e = ann.media_bytes(&up.media_id).await.expect_err("s3 is down");
    assert_eq!(e.code(), Some(ErrorCode::Unavailable));
    let _ = child.kill().await;
}

async fn app_get(base: &str, who: &Client, path: &str, header: (&str, &str)) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token(who))
        .header(header.0, header.1)
        .send()
        .await
        .expect("request")
}
