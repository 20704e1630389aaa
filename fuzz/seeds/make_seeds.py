#!/usr/bin/env python3
"""Writes the hand-made seed inputs of each fuzz target into corpus/<target>/.

Run from fuzz/: `python3 seeds/make_seeds.py`. Images come from Pillow when
it is installed; the committed corpus already holds them.
"""
import hashlib
import os

def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# WebSocket client frames (docs/protocol.md, proto's snapshot tests).
for f in [
    '{"type":"send","client_msg_id":"c1","conversation_id":7,"kind":"text","body":{"text":"hi"}}',
    '{"type":"send","client_msg_id":"c2","conversation_id":7,"kind":"text","body":{"text":"hey @b","mentions":[2],"reply_to":1}}',
    '{"type":"send","client_msg_id":"c3","conversation_id":7,"kind":"image","body":{"media_id":"abc","caption":"x"}}',
    '{"type":"send","client_msg_id":"c4","conversation_id":7,"kind":"voice","body":{"media_id":"abc","duration_ms":1200}}',
    '{"type":"send","client_msg_id":"c5","conversation_id":7,"kind":"file","body":{"media_id":"abc","name":"a.pdf"}}',
    '{"type":"sync","cursors":{"7":3,"9":0}}',
    '{"type":"sync"}',
    '{"type":"delivered","conversation_id":7,"seq":3}',
    '{"type":"read","conversation_id":7,"seq":3}',
    '{"type":"typing","conversation_id":7,"state":"start"}',
    '{"type":"ping","nonce":9}',
    '{"type":"ping"}',
    '{"type":"call","call_id":"c-1","conversation_id":7,"to_user_id":3,"signal":"invite","payload":{"media":"video"}}',
    '{"type":"call","call_id":"c-1","to_user_id":3,"signal":"ice","payload":{"candidate":"x"}}',
]:
    put("ws_frame", f)

# HTTP bodies: the first byte picks the endpoint (see src/lib.rs).
for which, body in [
    (0, '{"username":"alice","password":"correct horse","display_name":"Alice"}'),
    (1, '{"username":"alice","password":"correct horse","device_name":"laptop"}'),
    (2, '{"refresh_token":"abc"}'),
    (3, '{"old_password":"correct horse","new_password":"battery staple"}'),
    (4, '{"display_name":"A","avatar_media_id":null,"status_text":"away","hide_presence":true}'),
    (5, '{"kind":"group","title":"Team","member_ids":[2,3]}'),
    (5, '{"kind":"direct","user_id":2}'),
    (6, '{"title":"New","avatar_media_id":"m1","members_can_add":false,"muted":true}'),
    (7, '{"user_ids":[4,5]}'),
    (8, '{"role":"admin"}'),
    (9, '{"username":"bob"}'),
    (10, '{"client_msg_id":"c1","kind":"text","body":{"text":"hi"}}'),
    (11, '{"seq":4}'),
    (12, '{"body":{"text":"edited"}}'),
    (13, '{"client":"web"}'),
    (14, '{"code":"abc","flow":"login","device_name":"x"}'),
    (15, '{"signup_token":"t","username":"carol","display_name":"Carol"}'),
]:
    put("http_json", bytes([which]) + body.encode())

# tus headers: version, Upload-Length, Upload-Offset, Upload-Metadata,
# PATCH Content-Type, upload id.
for h in [
    "1.0.0\n1024\n0\nfilename YS5wbmc=,filetype aW1hZ2UvcG5n\napplication/offset+octet-stream\nAbC-_09",
    "0.2.2\n-1\n 12 \nmimetype dGV4dC9wbGFpbg==\ntext/plain\n../etc",
    "\n18446744073709551615\n18446744073709551616\ncontent-type !!\nApplication/Offset+Octet-Stream; x=1\n",
]:
    put("tus_headers", h)

# Ordering: bound/start byte, then (op, seq) pairs.
for o in [
    bytes([3, 0, 1, 0, 3, 0, 2]),
    bytes([1, 0, 5, 0, 6, 0, 7, 0, 1, 12, 4, 0, 2]),
    bytes([0x17, 0x10, 0, 0x10, 1, 0x0C, 2, 0x1C, 3]),
]:
    put("ordering", o)

# Media: small real images of every accepted type (made with Pillow when it
# is installed: `pip install pillow`), and a few non-images.
try:
    import io
    from PIL import Image

    def encoded(fmt, size=(4, 3), color=(200, 30, 30), **kw):
        out = io.BytesIO()
        Image.new("RGB", size, color).save(out, fmt, **kw)
        return out.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turned right
    for data in [
        encoded("PNG"),
        encoded("PNG", pnginfo=__import__("PIL.PngImagePlugin").PngImagePlugin.PngInfo()),
        encoded("JPEG", size=(16, 8)),
        encoded("JPEG", size=(8, 4), exif=exif.tobytes()),
        encoded("JPEG", size=(9, 9), progressive=True),
        encoded("GIF"),
        encoded("WEBP"),
        encoded("WEBP", lossless=True),
        encoded("WEBP", size=(5, 3), exif=exif.tobytes()),
    ]:
        put("media_upload", data)
    meta = Image.new("RGBA", (2, 2))
    info = __import__("PIL.PngImagePlugin").PngImagePlugin.PngInfo()
    info.add_text("comment", "secret")
    out = io.BytesIO()
    meta.save(out, "PNG", pnginfo=info)
    put("media_upload", out.getvalue())
except ImportError:
    pass
put("media_upload", b"%PDF-1.7\n")
put("media_upload", b"OggS" + bytes(24) + b"OpusHead\x01\x01")
put("media_upload", b"\0\0\0\x18ftypM4A \0\0\0\0M4A isom")
