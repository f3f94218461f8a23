#!/bin/sh
# Real dev workloads, run by tests/seccomp.rs under each profile. Each section prints one line the
# test expects; any failure stops the script (set -e) with a non-zero status.
set -eu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export HOME="$work"

# sh: a pipeline, background jobs, subshells, command substitution.
n=$(seq 1 1000 | grep -c 7 | tr -d ' ')
(sleep 0.05; echo a > bg1) & (echo b > bg2) & wait
sub=$( (cd / && pwd) )
echo "sh: $n $(cat bg1 bg2 | tr -d '\n') $sub"

# python3: threads, subprocess, tempfile, sqlite3, a multiprocessing pool.
python3 - <<'PY'
import multiprocessing, sqlite3, subprocess, tempfile, threading

def square(x):
    return x * x

if __name__ == "__main__":
    out = []
    ts = [threading.Thread(target=lambda i=i: out.append(i)) for i in range(4)]
    for t in ts: t.start()
    for t in ts: t.join()
    echo = subprocess.run(["echo", "child"], capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.NamedTemporaryFile("w+") as f:
        f.write("tmp"); f.flush(); f.seek(0); tmp = f.read()
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(d + "/t.db")
        db.execute("create table t(x)"); db.executemany("insert into t values (?)", [(1,), (2,)])
        db.commit(); total = db.execute("select sum(x) from t").fetchone()[0]; db.close()
    with multiprocessing.Pool(2) as pool:
        squares = sum(pool.map(square, range(10)))
    print(f"python: {len(out)} {echo} {tmp} {total} {squares}")
PY

# git: init, add, commit, log.
git init -q repo
git -C repo config user.email t@example.com
git -C repo config user.name tester
echo hello > repo/file
git -C repo add file
git -C repo commit -q -m first
echo "git: $(git -C repo log --format=%s)"

# make, cc (cc1, as, ld): build and run a program with threads.
cat > t.c <<'C'
#include <pthread.h>
#include <stdio.h>
static void *work(void *arg) { *(int *)arg *= 2; return NULL; }
int main(void) {
    int v[4] = {1, 2, 3, 4}; pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, work, &v[i]);
    int sum = 0;
    for (int i = 0; i < 4; i++) { pthread_join(t[i], NULL); sum += v[i]; }
    printf("cc: %d\n", sum);
    return 0;
}
C
printf 't: t.c\n\tcc -O1 -pthread -o t t.c\n' > Makefile
make -s t
./t

# node: fs (sync and through libuv's thread pool), child_process, worker_threads, a timer.
node -e '
const fs = require("fs"), cp = require("child_process");
const { Worker } = require("worker_threads");
fs.writeFileSync("n.txt", "node-fs");
const read = fs.readFileSync("n.txt", "utf8");
const child = cp.execFileSync("echo", ["child"]).toString().trim();
fs.promises.readFile("n.txt", "utf8").then((asyncRead) => {
  const w = new Worker("require(\"worker_threads\").parentPort.postMessage(21 * 2)", { eval: true });
  w.on("message", (m) => setTimeout(() => console.log(`node: ${read} ${asyncRead} ${child} ${m}`), 10));
});
'

# perl
perl -e 'my %h = map { $_ => $_ ** 2 } 1..3; print "perl: ", join(",", map { $h{$_} } sort keys %h), "\n"'

# tar and gzip
tar -czf repo.tgz repo
mkdir unpacked
tar -xzf repo.tgz -C unpacked
gzip -k repo/file
echo "tar: $(cat unpacked/repo/file) $(gunzip -c repo/file.gz)"

# The network: a TCP round trip on loopback where the profile allows it, EPERM where it does not.
python3 - <<'PY'
import socket, threading
try:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
except PermissionError as e:
    print(f"net: denied ({e.strerror})")
else:
    srv.bind(("127.0.0.1", 0)); srv.listen(1)
    def serve():
        c, _ = srv.accept(); c.sendall(c.recv(16).upper()); c.close()
    t = threading.Thread(target=serve); t.start()
    with socket.create_connection(srv.getsockname()) as c:
        c.sendall(b"ping"); reply = c.recv(16).decode()
    t.join()
    print(f"net: {reply}")
PY
