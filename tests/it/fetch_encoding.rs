//! Topics sent compressed: the hub offers the encodings it decodes, delivers the decoded
//! content, counts the decoded size against `fetch.max_bytes`, and refuses an encoding it did
//! not offer instead of delivering its bytes as the document.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::helpers::*;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn a_gzip_topic_is_delivered_decoded() {
    let hub = spawn_hub().await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    let topic = publisher.topic("/feed");
    publisher.set_encoded("/feed", "text/plain", "gzip", gzip(b"plain words"));
    hub.subscribed(&topic, &sub.callback("/cb")).await;
    assert_eq!(hub.publish(&topic).await.status(), 202);
    let got = sub.wait_deliveries(1).await;
    assert_eq!(got[0].body, b"plain words");
    let fetch = &publisher.fetches()[0];
    let offered = fetch.header("accept-encoding").unwrap_or_default();
    assert!(
        offered.contains("gzip") && offered.contains("br"),
        "{offered}"
    );
}

#[tokio::test]
async fn the_decoded_size_counts_and_unknown_encodings_are_refused() {
    let hub = spawn_hub_with("[fetch]\nmax_bytes = \"64KiB\"").await;
    let publisher = Publisher::start().await;
    let sub = Subscriber::start().await;
    // 4 MiB of zeros: a few KiB on the wire.
    let bomb = publisher.topic("/bomb");
    publisher.set_encoded("/bomb", "text/plain", "gzip", gzip(&vec![0u8; 4 << 20]));
    let odd = publisher.topic("/odd");
    publisher.set_encoded("/odd", "text/plain", "x-custom", b"\x1f\x8b??".to_vec());
    for topic in [&bomb, &odd] {
        hub.subscribed(topic, &sub.callback("/cb")).await;
        assert_eq!(hub.publish(topic).await.status(), 202);
    }
    hub.wait_pings_done().await;
    let bomb_result = hub.last_fetch(&bomb).await;
    assert!(bomb_result.contains("too large"), "{bomb_result}");
    let odd_result = hub.last_fetch(&odd).await;
    assert!(
        odd_result.contains("x-custom") && odd_result.contains("decodes"),
        "{odd_result}"
    );
    assert!(sub.deliveries().is_empty());
}
