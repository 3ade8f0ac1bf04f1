//! The estimate vocabulary's lifetime, in a process of its own (other test
//! binaries pin it with `load_now`).

use std::time::{Duration, Instant};

use aigw::tap::estimate;

fn eventually(within: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn the_vocabulary_is_loaded_on_demand_and_dropped_when_unused() {
    assert!(!estimate::is_loaded());
    // Before it is ready, the byte rule answers at once.
    assert_eq!(estimate::count("The quick brown fox jumps over the lazy dog."), 11);
    assert!(eventually(Duration::from_secs(10), estimate::is_loaded), "loaded after the first estimate");
    assert_eq!(estimate::count("The quick brown fox jumps over the lazy dog."), 10);
    // Dropped 5 s after the last estimate; the next one loads it again.
    assert!(eventually(Duration::from_secs(20), || !estimate::is_loaded()), "dropped when unused");
    let _ = estimate::count("again");
    assert!(eventually(Duration::from_secs(10), estimate::is_loaded), "loaded again");
}
