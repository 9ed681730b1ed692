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
