// routes.rs is a WAGI test module in Rust, written the way deislabs/wagi's
// own test modules (dynamic-routes, multiple-entrypoints, env_wagi) are:
// #[no_mangle] exports named by _routes or by `entrypoint`, files read with
// std::fs. No crates. Rebuild with build.sh.
use std::io::Write;

fn main() {
    answer("main from Rust");
}

#[no_mangle]
pub extern "C" fn on_exact() {
    answer("exact from Rust");
}

#[no_mangle]
pub extern "C" fn on_wildcard() {
    answer("wildcard from Rust");
}

#[no_mangle]
pub extern "C" fn ep1() {
    answer("entrypoint ep1 from Rust");
}

/// Lists / and reads a template, as env_wagi lists / and reads LICENSE.txt.
#[no_mangle]
pub extern "C" fn list_files() {
    let mut out = String::from("Content-Type: text/plain\n\n");
    let mut names: Vec<String> = match std::fs::read_dir("/") {
        Ok(dir) => dir.map(|e| e.unwrap().file_name().into_string().unwrap()).collect(),
        Err(e) => vec![format!("read_dir failed: {}", e)],
    };
    names.sort();
    out.push_str(&format!("/: {}\n", names.join(" ")));
    match std::fs::read_to_string("/templates/page.html") {
        Ok(s) => out.push_str(&format!("page.html: {}", s)),
        Err(e) => out.push_str(&format!("page.html: {}\n", e)),
    }
    match std::fs::read_to_string("/velo.toml") {
        Ok(_) => out.push_str("velo.toml: readable\n"),
        Err(e) => out.push_str(&format!("velo.toml: {}\n", e.kind() == std::io::ErrorKind::NotFound)),
    }
    std::io::stdout().write_all(out.as_bytes()).unwrap();
}

#[no_mangle]
pub extern "C" fn _routes() {
    println!("/exact on_exact");
    println!("/wildcard/... on_wildcard");
    println!("/files list_files");
    println!("/main _start");
}

fn answer(what: &str) {
    let mut out = format!("Content-Type: text/plain\n\n{}\n", what);
    for k in ["SCRIPT_NAME", "PATH_INFO", "X_MATCHED_ROUTE"] {
        out.push_str(&format!("{}={}\n", k, std::env::var(k).unwrap_or_default()));
    }
    std::io::stdout().write_all(out.as_bytes()).unwrap();
}
