//! Raw WebSocket connections for frames the SDK would never send: open one
//! past its `hello`, read until an `error` frame.

use confab_sdk::proto::ServerFrame;
use confab_sdk::{ErrorCode, RawConnection};

use super::WAIT;

/// Opens a raw connection and reads its `hello`.
pub async fn raw_connect(client: &confab_sdk::Client) -> RawConnection {
    let mut raw = client.connect_raw().await.expect("raw connect");
    hello(&mut raw).await;
    raw
}

/// Reads the first frame and checks that it is `hello`.
pub async fn hello(raw: &mut RawConnection) {
    match raw.next_frame_within(WAIT).await.expect("hello") {
        ServerFrame::Hello { .. } => {}
        other => panic!("expected hello first, got {other:?}"),
    }
}

/// Skips frames up to the next `error` frame; its code and the
/// `client_msg_id` it names.
pub async fn expect_error(conn: &mut RawConnection) -> (ErrorCode, Option<String>) {
    loop {
        if let ServerFrame::Error {
            code,
            client_msg_id,
            ..
        } = conn.next_frame_within(WAIT).await.expect("an error frame")
        {
            return (code, client_msg_id);
        }
    }
}
