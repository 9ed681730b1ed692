//! Host names are a type: what parses is what an agent could authenticate as, and the type
//! reads and writes as the plain text entries have always held.

use ledger::domain::Hostname;

#[test]
fn host_names_parse_and_serialize_as_their_text() {
    for ok in ["web-01", "db_2.example.org", "a"] {
        let h = Hostname::parse(ok).unwrap();
        assert_eq!(h.as_str(), ok);
        assert_eq!(serde_json::to_string(&h).unwrap(), format!("{ok:?}"));
        assert_eq!(
            serde_json::from_str::<Hostname>(&format!("{ok:?}")).unwrap(),
            h
        );
        let bytes = bincode::serde::encode_to_vec(&h, bincode::config::standard()).unwrap();
        let text = bincode::serde::encode_to_vec(ok, bincode::config::standard()).unwrap();
        assert_eq!(bytes, text, "the same bytes as the String entries hold");
    }
    for bad in ["", "web 01", "web/01", "ünï", &"a".repeat(254)] {
        assert!(Hostname::parse(bad).is_err(), "{bad:?}");
        assert!(serde_json::from_str::<Hostname>(&format!("{bad:?}")).is_err());
    }
}

/// Probe kinds are a free string on nixfleet's wire. The four known ones keep the one-byte
/// encoding entries always had; any other name is kept, not refused.
#[test]
fn probe_kinds_keep_their_encoding_and_accept_any_name() {
    use ledger::domain::ProbeKind;
    let cfg = bincode::config::standard();
    for (i, k) in [
        ProbeKind::Http,
        ProbeKind::Tcp,
        ProbeKind::Exec,
        ProbeKind::Evidence,
    ]
    .into_iter()
    .enumerate()
    {
        let bytes = bincode::serde::encode_to_vec(&k, cfg).unwrap();
        assert_eq!(bytes, [i as u8], "{k:?}: the encoding entries hold");
        let (back, _): (ProbeKind, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(back, k);
        assert_eq!(
            serde_json::to_string(&k).unwrap(),
            format!("{:?}", k.name())
        );
    }
    let other: ProbeKind = serde_json::from_str("\"dns\"").unwrap();
    assert_eq!(other, ProbeKind::Other("dns".into()));
    assert_eq!(serde_json::to_string(&other).unwrap(), "\"dns\"");
    let bytes = bincode::serde::encode_to_vec(&other, cfg).unwrap();
    assert_eq!(bytes, [4, 3, b'd', b'n', b's']);
    let (back, _): (ProbeKind, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
    assert_eq!(back, other);
    assert_eq!(
        serde_json::from_str::<ProbeKind>("\"evidence\"").unwrap(),
        ProbeKind::Evidence
    );
}
