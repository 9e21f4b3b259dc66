// outbound.rs is the Rust twin of outbound.c (see there for what it does),
// built with no crates: the imports are declared as the raw bindings of
// wasi-experimental-http's Rust crate declare them. Rebuild with build.sh.
use std::env;
use std::io::{self, Read, Write};

type Handle = i32;

#[link(wasm_import_module = "wasi_experimental_http")]
extern "C" {
    fn req(
        url_ptr: *const u8,
        url_len: usize,
        method_ptr: *const u8,
        method_len: usize,
        headers_ptr: *const u8,
        headers_len: usize,
        body_ptr: *const u8,
        body_len: usize,
        result_0_ptr: *mut u16,
        result_1_ptr: *mut Handle,
    ) -> u32;
    fn close(response_handle: Handle) -> u32;
    fn header_get(
        response_handle: Handle,
        header_name_ptr: *const u8,
        header_name_len: usize,
        header_value_buf_ptr: *mut u8,
        header_value_buf_len: usize,
        result_ptr: *mut usize,
    ) -> u32;
    fn headers_get_all(
        response_handle: Handle,
        header_value_buf_ptr: *mut u8,
        header_value_buf_len: usize,
        result_ptr: *mut usize,
    ) -> u32;
    fn body_read(
        response_handle: Handle,
        body_buf_ptr: *mut u8,
        body_buf_len: usize,
        result_ptr: *mut usize,
    ) -> u32;
}

fn var(name: &str, default: &str) -> String {
    match env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => default.to_string(),
    }
}

fn main() {
    let url = var("HTTP_X_URL", "");
    let method = var("HTTP_X_METHOD", "GET");
    let open: usize = var("HTTP_X_OPEN", "1").parse().unwrap_or(1);
    let mut body = Vec::new();
    io::stdin().read_to_end(&mut body).unwrap();
    let mut headers = String::from("x-lang:rust\ncontent-type:text/plain\n");
    if let Ok(auth) = env::var("HTTP_X_AUTH") {
        headers.push_str(&format!("authorization:{}\n", auth));
    }

    let out = io::stdout();
    let mut out = out.lock();
    write!(out, "Content-Type: text/plain\n\n").unwrap();
    let mut status: u16 = 0;
    let mut handle: Handle = 0;
    for i in 0..open {
        let err = unsafe {
            req(
                url.as_ptr(), url.len(), method.as_ptr(), method.len(),
                headers.as_ptr(), headers.len(), body.as_ptr(), body.len(),
                &mut status, &mut handle,
            )
        };
        if err != 0 {
            if open > 1 {
                write!(out, "opened={}\n", i).unwrap();
            }
            write!(out, "error={}\n", err).unwrap();
            return;
        }
    }
    write!(out, "status={}\n", status).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut n: usize = 0;
    let name = "X-Echo";
    let err = unsafe { header_get(handle, name.as_ptr(), name.len(), buf.as_mut_ptr(), buf.len(), &mut n) };
    if err != 0 {
        write!(out, "x-echo=error={}\n", err).unwrap();
    } else {
        write!(out, "x-echo=").unwrap();
        out.write_all(&buf[..n]).unwrap();
        write!(out, "\n").unwrap();
    }
    let err = unsafe { headers_get_all(handle, buf.as_mut_ptr(), buf.len(), &mut n) };
    if err != 0 {
        write!(out, "all=error={}\n", err).unwrap();
    } else {
        write!(out, "all:\n").unwrap();
        out.write_all(&buf[..n]).unwrap();
    }
    write!(out, "body:\n").unwrap();
    loop {
        let err = unsafe { body_read(handle, buf.as_mut_ptr(), 1000, &mut n) };
        if err != 0 {
            write!(out, "\nbody=error={}\n", err).unwrap();
            break;
        }
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).unwrap();
    }
    unsafe { close(handle) };
    let err = unsafe { body_read(handle, buf.as_mut_ptr(), buf.len(), &mut n) };
    write!(out, "\nafter close={}\n", err).unwrap();
}
