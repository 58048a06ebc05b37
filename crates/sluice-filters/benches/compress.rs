//! On-the-fly compression through `Coder`, in MB/s of the original body: each coding at a
//! fast, the default and a slow level, on a 256 KiB HTML + JSON body fed in 16 KiB chunks,
//! each flushed as a streamed response's are; and decompression (`decompress #true`) at the
//! default levels. The compressed sizes are printed once per case.
//!
//!     cargo bench -p sluice-filters --bench compress
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_filters::compress::{Coder, Coding, Levels};

const BODY: usize = 256 * 1024;
const CHUNK: usize = 16 * 1024;

/// Half an HTML table, half a JSON array in a script: what web origins send.
fn body() -> Vec<u8> {
    let mut text = String::with_capacity(BODY + 512);
    text.push_str("<!doctype html>\n<html><head><title>Orders</title>");
    text.push_str("<link rel=\"stylesheet\" href=\"/static/app.css\"></head><body><table class=\"orders\">\n");
    let mut i = 0u64;
    while text.len() < BODY / 2 {
        text.push_str(&format!(
            "<tr class=\"row\"><td class=\"id\">{i}</td><td class=\"name\">Customer {}</td><td class=\"total\">{}.{:02} EUR</td></tr>\n",
            i * 7919 % 1543,
            i * 31 % 997,
            i % 100
        ));
        i += 1;
    }
    text.push_str("</table><script>const orders = [");
    let statuses = ["new", "paid", "shipped", "returned"];
    while text.len() < BODY {
        text.push_str(&format!(
            "{{\"id\":{i},\"customer\":\"c-{}\",\"status\":\"{}\",\"items\":{},\"total\":{}.{:02}}},",
            i * 7919 % 1543,
            statuses[(i % 4) as usize],
            i % 7 + 1,
            i * 31 % 997,
            i % 100
        ));
        i += 1;
    }
    let mut bytes = text.into_bytes();
    bytes.truncate(BODY);
    bytes
}

fn chunks(data: &[u8]) -> Vec<Bytes> {
    data.chunks(CHUNK).map(Bytes::copy_from_slice).collect()
}

/// Runs a whole body through `coder`; returns what came out.
fn run(mut coder: Coder, input: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, chunk) in input.iter().enumerate() {
        if let Some(bytes) = coder.process(Some(chunk.clone()), i + 1 == input.len()).unwrap() {
            out.extend_from_slice(&bytes);
        }
    }
    out
}

fn compression(c: &mut Criterion) {
    let body = body();
    let input = chunks(&body);

    let mut group = c.benchmark_group("compress");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.sample_size(20);
    for (coding, levels) in [(Coding::Gzip, [1, 5, 9]), (Coding::Brotli, [1, 4, 9]), (Coding::Zstd, [1, 3, 9])] {
        for level in levels {
            let size = run(Coder::encoder(coding, level).unwrap(), &input).len();
            eprintln!(
                "{coding} level {level}: {} -> {size} bytes ({:.1}%)",
                body.len(),
                100.0 * size as f64 / body.len() as f64
            );
            group.bench_with_input(BenchmarkId::new(coding.token(), level), &level, |b, &level| {
                b.iter(|| black_box(run(Coder::encoder(coding, level).unwrap(), &input).len()))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("decompress");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.sample_size(20);
    for coding in Coding::DEFAULT_ORDER {
        let level = Levels::default().of(coding);
        let compressed = chunks(&run(Coder::encoder(coding, level).unwrap(), &input));
        group.bench_with_input(BenchmarkId::new(coding.token(), level), &level, |b, _| {
            b.iter(|| black_box(run(Coder::decoder(coding).unwrap(), &compressed).len()))
        });
    }
    group.finish();
}

criterion_group!(benches, compression);
criterion_main!(benches);
