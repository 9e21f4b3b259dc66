// pristine.rs is pristine.c's probe in Rust, for the tests that a reused
// instance shows each request a pristine one (warm.go): /probe reports a
// static counter, a static byte, a stack and a heap address and the
// arguments, then dirties them; the other routes end with an exit code, a
// panic (a trap) or normally, each after dirtying the same state. Rebuild
// with build.sh.
use std::io::Write;

static mut COUNTER: u32 = 0;
static mut SCRATCH: u8 = b'-';

fn main() {
    let path = std::env::var("PATH_INFO").unwrap_or_default();
    let mut out = std::io::stdout();
    let local = 0u32;
    let heap = Box::into_raw(Box::new([0u8; 100])); // leaked on purpose
    let (count, scratch) = unsafe {
        COUNTER += 1;
        let s = SCRATCH;
        SCRATCH = b'd';
        (COUNTER, s as char)
    };
    match path.as_str() {
        "/probe" => {
            let args: Vec<String> = std::env::args().collect();
            write!(out, "Content-Type: text/plain\n\ncount={} stack={:p} heap={:p} scratch={} args={:?}\n",
                count, &local, heap, scratch, args).unwrap();
        }
        "/exit3" => {
            write!(out, "Content-Type: text/plain\n\nbye\n").unwrap();
            out.flush().unwrap();
            std::process::exit(3);
        }
        "/panic" => panic!("boom"),
        _ => write!(out, "Content-Type: text/plain\n\nother\n").unwrap(),
    }
}
