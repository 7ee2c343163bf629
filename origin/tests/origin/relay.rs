//! Relayed requests: a device checks in through a site peer (a real QUIC server in this test,
//! relaying `Challenge` and signed requests the way `ota-peer` does) to a real
//! `ota-origin serve`, and every attack on the relay path gets its exact refusal.

use std::time::Duration;

use ota_core::digest::ChunkId;
use ota_core::director::CheckInAnswer;
use ota_net::client::{Answer, Client};
use ota_net::proto::{
    ChannelBinding, Nonce, Refusal, RelayHop, RelayKey, Relayed, RelayedVia, Request, Response,
    Signature, SignedKind, SignedRequest,
};
use ota_net::quic::{self, Identity, NodeKey, SERVER_NAME, TransportLimits};
use ota_net::server::{ConnInfo, Handler, Server, ServerConfig};

use crate::e2e::{Device, ceremony, check_in_body, init, now, ok, refused, serve};

/// A site peer as far as requests go: challenges and signed requests are relayed upstream
/// on its one connection to the origin, with its node key.
struct RelayPeer {
    upstream: Client,
    key: NodeKey,
}

impl Handler for RelayPeer {
    async fn challenge(&self, _conn: &ConnInfo) -> Result<Nonce, Refusal> {
        self.upstream
            .challenge()
            .await
            .map_err(|e| Refusal::new(Refusal::UNAVAILABLE, e.to_string()))
    }

    async fn signed(
        &self,
        conn: &ConnInfo,
        kind: SignedKind,
        request: SignedRequest,
    ) -> Result<Vec<u8>, Refusal> {
        match self
            .upstream
            .relayed(&self.key, kind, conn.binding, request)
            .await
        {
            Ok(Answer::Signed(body)) => Ok(body),
            Ok(Answer::Refused(refusal)) => Err(refusal),
            Err(e) => Err(Refusal::new(Refusal::UNAVAILABLE, e.to_string())),
        }
    }

    async fn metadata(&self, _conn: &ConnInfo, _name: &str) -> Option<bytes::Bytes> {
        None
    }

    async fn blob(&self, _conn: &ConnInfo, _id: &ChunkId) -> Option<bytes::Bytes> {
        None
    }
}

fn refused_with(answer: Answer) -> Refusal {
    match answer {
        Answer::Refused(refusal) => refusal,
        Answer::Signed(body) => panic!("accepted: {}", String::from_utf8_lossy(&body)),
    }
}

/// Sends `request` as one raw stream on a new connection and returns the answer header.
async fn raw_request(
    addr: std::net::SocketAddr,
    pin: quic::CertPin,
    request: &Request,
) -> Response {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = quic::client_config(pin, &TransportLimits::default()).unwrap();
    let connection = endpoint
        .connect_with(config, addr, SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&request.encode_frame().unwrap())
        .await
        .unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(64 * 1024).await.unwrap();
    let (response, _) = Response::decode_frame(&answer).unwrap();
    connection.close(0u32.into(), b"done");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_check_ins_and_attacks_on_the_relay_path() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    let data_s = data.to_str().unwrap();
    let (_authorities, root, director_root) = ceremony(&data, temp.path());
    init(&data, &root, &director_root);
    let device = Device::new(20);
    ok(&[
        "device",
        "enroll",
        "--data",
        data_s,
        "--public-key",
        &device.public_hex(),
        "--channel",
        "stable",
        "--model",
        "enigm-one",
    ]);

    // The site peer's node key, enrolled as a relay; a stranger's is not.
    let peer_key = NodeKey::from_seed([30; 32]);
    let peer_identity = Identity::from_node_key(&peer_key).unwrap();
    let peer_hex = hex::encode(peer_identity.public_key());
    let stranger_key = NodeKey::from_seed([31; 32]);
    ok(&[
        "peer",
        "enroll",
        "--data",
        data_s,
        "--public-key",
        &peer_hex,
        "--name",
        "site-a",
    ]);
    let again = refused(&[
        "peer",
        "enroll",
        "--data",
        data_s,
        "--public-key",
        &peer_hex,
    ]);
    assert!(again.contains("is already enrolled"), "{again}");
    let listed = ok(&["peer", "list", "--data", data_s]);
    assert!(
        listed.contains(&peer_hex) && listed.contains("enrolled") && listed.contains("site-a"),
        "{listed}"
    );

    let served = serve(&data);
    let upstream = Client::connect(served.quic, served.pin).await.unwrap();
    let peer = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &peer_identity,
        ServerConfig::default(),
        RelayPeer {
            upstream: upstream.clone(),
            key: peer_key.clone(),
        },
    )
    .unwrap();
    let to_peer = Client::connect(peer.local_addr(), peer.pin())
        .await
        .unwrap();

    // A check-in through the peer: the nonce comes from the origin by way of the peer, the
    // device signs over its connection to the peer, and the origin answers.
    let nonce = to_peer.challenge().await.unwrap();
    let request = device.sign(
        &to_peer,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    let Answer::Signed(body) = to_peer
        .signed(SignedKind::CheckIn, request.clone())
        .await
        .unwrap()
    else {
        panic!("relayed check-in refused")
    };
    assert!(matches!(
        serde_json::from_slice::<CheckInAnswer>(&body).unwrap(),
        CheckInAnswer::NoOffer { .. }
    ));

    // Attack: the relayed request replayed (by the peer, or anyone who saw it).
    let replay = upstream
        .relayed(
            &peer_key,
            SignedKind::CheckIn,
            to_peer.channel_binding(),
            request,
        )
        .await
        .unwrap();
    assert_eq!(refused_with(replay).reason, "nonce already used");

    // Attack: a device's request relayed with a binding other than the one it signed over
    // (a request lifted from one device↔peer connection and passed off as another's).
    let nonce = upstream.challenge().await.unwrap();
    let request = device.sign(
        &to_peer,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    let other_binding = ChannelBinding([0x77; 32]);
    let answer = upstream
        .relayed(
            &peer_key,
            SignedKind::CheckIn,
            other_binding,
            request.clone(),
        )
        .await
        .unwrap();
    let refusal = refused_with(answer);
    assert_eq!(
        (refusal.code, refusal.reason.as_str()),
        (Refusal::FORBIDDEN, "bad signature")
    );

    // Attack: a relay that is not enrolled (a fresh connection, a key of its own).
    let unenrolled = Client::connect(served.quic, served.pin).await.unwrap();
    let nonce = unenrolled.challenge().await.unwrap();
    let request = device.sign(
        &to_peer,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    let answer = unenrolled
        .relayed(
            &stranger_key,
            SignedKind::CheckIn,
            to_peer.channel_binding(),
            request.clone(),
        )
        .await
        .unwrap();
    let refusal = refused_with(answer);
    assert_eq!(
        (refusal.code, refusal.reason.as_str()),
        (Refusal::FORBIDDEN, "relay not enrolled")
    );

    // Attack: an enrolled relay's message, made for its own connection, sent on another
    // (the nonce above was issued on `unenrolled`'s connection, and is still unused).
    let mut stolen = Relayed {
        kind: SignedKind::CheckIn,
        device_binding: to_peer.channel_binding(),
        request,
        relay_key: RelayKey(peer_identity.public_key()),
        relay_signature: Signature([0; 64]),
    };
    {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(peer_key.seed());
        stolen.relay_signature = Signature(
            key.sign(&stolen.signing_bytes(&upstream.channel_binding()))
                .to_bytes(),
        );
    }
    let Response::Refused(refusal) =
        raw_request(served.quic, served.pin, &Request::Relayed(stolen)).await
    else {
        panic!("a relayed request signed for another connection was not refused")
    };
    assert_eq!(refusal.reason, "bad relay signature");

    // Attack: a nonce the device got on its own connection to the origin, relayed by the
    // peer: the nonce must have been issued on the relay's connection.
    let direct = Client::connect(served.quic, served.pin).await.unwrap();
    let nonce = direct.challenge().await.unwrap();
    let request = device.sign(
        &to_peer,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    let answer = to_peer.signed(SignedKind::CheckIn, request).await.unwrap();
    assert_eq!(
        refused_with(answer).reason,
        "nonce issued on another connection"
    );

    // Attack: a stale timestamp, relayed.
    let nonce = to_peer.challenge().await.unwrap();
    let request = device.sign(
        &to_peer,
        SignedKind::CheckIn,
        nonce,
        now().plus_secs(-3600),
        check_in_body(None),
    );
    let reason = refused_with(to_peer.signed(SignedKind::CheckIn, request).await.unwrap()).reason;
    assert!(reason.contains("outside the window"), "{reason}");

    // A revoked relay is refused at once, on its open connection.
    ok(&[
        "peer",
        "revoke",
        "--data",
        data_s,
        "--public-key",
        &peer_hex,
    ]);
    let listed = ok(&["peer", "list", "--data", data_s]);
    assert!(listed.contains("revoked"), "{listed}");
    let nonce = to_peer.challenge().await.unwrap();
    let request = device.sign(
        &to_peer,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    let answer = to_peer.signed(SignedKind::CheckIn, request).await.unwrap();
    assert_eq!(refused_with(answer).reason, "revoked relay");

    // A server that takes no relayed requests says so.
    let plain = Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &Identity::from_node_key(&NodeKey::from_seed([32; 32])).unwrap(),
        ServerConfig::default(),
        RelayPeer {
            upstream: upstream.clone(),
            key: peer_key.clone(),
        },
    )
    .unwrap();
    let to_plain = Client::connect(plain.local_addr(), plain.pin())
        .await
        .unwrap();
    let nonce = upstream.challenge().await.unwrap();
    let request = device.sign(
        &to_plain,
        SignedKind::CheckIn,
        nonce,
        now(),
        check_in_body(None),
    );
    let answer = to_plain
        .relayed(
            &peer_key,
            SignedKind::CheckIn,
            to_peer.channel_binding(),
            request,
        )
        .await
        .unwrap();
    assert_eq!(refused_with(answer).code, Refusal::NOT_SUPPORTED);

    to_plain.close();
    to_peer.close();
    upstream.close();
    plain.shutdown(Duration::from_secs(1)).await;
    peer.shutdown(Duration::from_secs(1)).await;
    drop(served);
}

/// Site peer S's hop in a chain: S relayed the device's request on its connection to the
/// regional peer, whose binding is `binding`, signing for that connection.
fn hop(
    s: &NodeKey,
    binding: ChannelBinding,
    signed_for: ChannelBinding,
    device_binding: ChannelBinding,
    request: &SignedRequest,
) -> RelayHop {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(s.seed());
    let relay_key = RelayKey(key.verifying_key().to_bytes());
    let bytes = ota_net::proto::relay_signing_bytes(
        SignedKind::CheckIn,
        &relay_key,
        &signed_for,
        &device_binding,
        request,
    );
    RelayHop {
        relay_key,
        binding,
        relay_signature: Signature(key.sign(&bytes).to_bytes()),
    }
}

/// Two levels of relays (device → site peer S → regional peer R → origin), as `RelayedVia`
/// from R naming S as a hop: a good chain is answered; every attack on the chain gets its
/// exact refusal (a hop not enrolled, a hop's signature made for another connection, a relay
/// named twice, R's message sent on another connection, a replay, a revoked hop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_relayed_through_two_relays_and_attacks_on_the_chain() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("origin");
    let data_s = data.to_str().unwrap();
    let (_authorities, root, director_root) = ceremony(&data, temp.path());
    init(&data, &root, &director_root);
    let device = Device::new(21);
    ok(&[
        "device",
        "enroll",
        "--data",
        data_s,
        "--public-key",
        &device.public_hex(),
        "--channel",
        "stable",
        "--model",
        "enigm-one",
    ]);
    let regional = NodeKey::from_seed([40; 32]);
    let site = NodeKey::from_seed([41; 32]);
    let stranger = NodeKey::from_seed([42; 32]);
    let hex_of = |k: &NodeKey| hex::encode(Identity::from_node_key(k).unwrap().public_key());
    for (key, name) in [(&regional, "regional"), (&site, "site")] {
        ok(&[
            "peer",
            "enroll",
            "--data",
            data_s,
            "--public-key",
            &hex_of(key),
            "--name",
            name,
        ]);
    }

    let served = serve(&data);
    // R's connection to the origin, and a connection standing for the device's to S (its
    // binding is what the device signs over).
    let upstream = Client::connect(served.quic, served.pin).await.unwrap();
    let device_conn = Client::connect(served.quic, served.pin).await.unwrap();
    let device_binding = device_conn.channel_binding();
    let s_to_r = ChannelBinding([0x55; 32]);
    let signed = |nonce| {
        device.sign(
            &device_conn,
            SignedKind::CheckIn,
            nonce,
            now(),
            check_in_body(None),
        )
    };
    let via_r = |request: SignedRequest, via: Vec<RelayHop>| {
        let upstream = upstream.clone();
        let regional = regional.clone();
        async move {
            upstream
                .relayed_via(&regional, SignedKind::CheckIn, device_binding, request, via)
                .await
                .unwrap()
        }
    };

    // The good chain: answered.
    let request = signed(upstream.challenge().await.unwrap());
    let good = vec![hop(&site, s_to_r, s_to_r, device_binding, &request)];
    let Answer::Signed(body) = via_r(request.clone(), good.clone()).await else {
        panic!("a check-in relayed through two enrolled relays was refused")
    };
    assert!(matches!(
        serde_json::from_slice::<CheckInAnswer>(&body).unwrap(),
        CheckInAnswer::NoOffer { .. }
    ));
    // Replayed: its nonce is spent.
    assert_eq!(
        refused_with(via_r(request, good).await).reason,
        "nonce already used"
    );

    // A hop that is not enrolled (a rogue site peer laundering through an enrolled regional
    // peer).
    let request = signed(upstream.challenge().await.unwrap());
    let rogue = vec![hop(&stranger, s_to_r, s_to_r, device_binding, &request)];
    let refusal = refused_with(via_r(request, rogue).await);
    assert_eq!(
        (refusal.code, refusal.reason.as_str()),
        (Refusal::FORBIDDEN, "relay not enrolled")
    );

    // A hop's signature made for another connection than the one R says it came on.
    let request = signed(upstream.challenge().await.unwrap());
    let moved = vec![hop(
        &site,
        s_to_r,
        ChannelBinding([0x56; 32]),
        device_binding,
        &request,
    )];
    assert_eq!(
        refused_with(via_r(request, moved).await).reason,
        "bad relay signature"
    );

    // The sender named again as a hop (a loop).
    let request = signed(upstream.challenge().await.unwrap());
    let looped = vec![hop(&regional, s_to_r, s_to_r, device_binding, &request)];
    assert_eq!(
        refused_with(via_r(request, looped).await).reason,
        "bad relay signature"
    );

    // R's message, made for R's connection, sent on another.
    let request = signed(upstream.challenge().await.unwrap());
    let mut stolen = RelayedVia {
        relayed: Relayed {
            kind: SignedKind::CheckIn,
            device_binding,
            relay_key: RelayKey(Identity::from_node_key(&regional).unwrap().public_key()),
            relay_signature: Signature([0; 64]),
            request: request.clone(),
        },
        via: vec![hop(&site, s_to_r, s_to_r, device_binding, &request)],
    };
    {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(regional.seed());
        stolen.relayed.relay_signature = Signature(
            key.sign(&stolen.signing_bytes(&upstream.channel_binding()))
                .to_bytes(),
        );
    }
    let Response::Refused(refusal) =
        raw_request(served.quic, served.pin, &Request::RelayedVia(stolen)).await
    else {
        panic!("a request relayed via relays, signed for another connection, was not refused")
    };
    assert_eq!(refusal.reason, "bad relay signature");

    // The site peer revoked: refused, though the regional peer is still enrolled.
    ok(&[
        "peer",
        "revoke",
        "--data",
        data_s,
        "--public-key",
        &hex_of(&site),
    ]);
    let request = signed(upstream.challenge().await.unwrap());
    let revoked = vec![hop(&site, s_to_r, s_to_r, device_binding, &request)];
    assert_eq!(
        refused_with(via_r(request, revoked).await).reason,
        "revoked relay"
    );

    device_conn.close();
    upstream.close();
    drop(served);
}
