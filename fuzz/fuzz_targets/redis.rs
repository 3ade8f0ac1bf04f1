//! Fuzz target for what aigw reads from Redis: RESP replies and stored cache
//! entries. Beyond "no panic": a reply parses the same with more bytes
//! behind it, and a prefix of a reply never errors where the whole did not.
#![no_main]

use aigw::{cache::Entry, redis::resp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = resp::parse(data);
    if let Ok(Some((reply, used))) = &whole {
        assert!(*used <= data.len());
        let mut more = data.to_vec();
        more.extend_from_slice(b"+OK\r\n");
        assert_eq!(resp::parse(&more), Ok(Some((reply.clone(), *used))));
        for cut in 0..*used {
            assert!(matches!(resp::parse(&data[..cut]), Ok(None) | Ok(Some(_))), "prefix {cut} errored");
        }
    }
    if let Some(e) = Entry::decode(bytes::Bytes::copy_from_slice(data)) {
        assert_eq!(Entry::decode(bytes::Bytes::from(e.encode())), Some(e));
    }
});
