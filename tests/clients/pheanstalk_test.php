<?php
// Differential test with a published PHP client (Debian's php-pda-pheanstalk, Pheanstalk 4):
// the same scenario runs against beanstalkd 1.12 and against yaad in each mode, and the
// transcripts of what the library returned must be equal.
//
//   php tests/clients/pheanstalk_test.php target/debug/yaad [beanstalkd]
//
// Exits non-zero and prints both transcripts where they first differ.

declare(strict_types=1);

require_once 'Pheanstalk/autoload.php';

use Pheanstalk\Contract\ResponseInterface;
use Pheanstalk\Job;
use Pheanstalk\JobId;
use Pheanstalk\Pheanstalk;

if ($argc < 2) {
    fwrite(STDERR, "usage: pheanstalk_test.php YAAD_BINARY [BEANSTALKD_BINARY]\n");
    exit(2);
}
$yaad = $argv[1];
$beanstalkd = $argv[2] ?? 'beanstalkd';

// Keys yaad's `stats` adds to beanstalkd's (README "Differences").
const YAAD_BASE_STATS = ['mode', 'spokes', 'segments-open', 'corrupt-records-skipped', 'data-bytes', 'hub-lock-acquisitions', 'hub-lock-contended', 'hub-lock-held-us', 'hub-lock-wait-us'];
const YAAD_HOLD_KINDS = ['create', 'load', 'compact', 'retire', 'split', 'other'];
define('YAAD_EXTRA_STATS', array_merge(array_merge(YAAD_BASE_STATS, ...array_map(
    fn($k) => ["hub-lock-holds-over-1ms-$k", "hub-lock-holds-over-5ms-$k",
        "hub-lock-timer-cpu-over-1ms-$k", "hub-lock-timer-cpu-over-5ms-$k"],
    YAAD_HOLD_KINDS
)), ['syncs', 'sync-changes', 'sync-us']));

function free_port(): int
{
    $s = stream_socket_server('tcp://127.0.0.1:0');
    $name = stream_socket_get_name($s, false);
    fclose($s);
    return (int) substr($name, strrpos($name, ':') + 1);
}

/** Starts a server, runs $fn with its port, stops it. */
function with_server(array $cmd, callable $fn): array
{
    $port = free_port();
    $argv = array_merge($cmd, ['-l', '127.0.0.1', '-p', (string) $port]);
    $null = ['file', '/dev/null', 'w'];
    $proc = proc_open($argv, [0 => ['file', '/dev/null', 'r'], 1 => $null, 2 => $null], $pipes);
    if ($proc === false) {
        throw new RuntimeException('cannot start ' . implode(' ', $argv));
    }
    try {
        $deadline = microtime(true) + 10;
        while (($s = @stream_socket_client("tcp://127.0.0.1:$port")) === false) {
            if (microtime(true) > $deadline) {
                throw new RuntimeException(implode(' ', $argv) . " did not listen on $port");
            }
            usleep(20000);
        }
        fclose($s);
        return $fn($port);
    } finally {
        proc_terminate($proc, 15);
        proc_close($proc);
    }
}

/** Records what $fn returns, or the class of what it threw. */
function rec(array &$log, string $label, callable $fn): void
{
    try {
        $log[] = [$label, $fn()];
    } catch (Throwable $e) {
        $log[] = [$label, 'threw ' . get_class($e)];
    }
}

function pick(ResponseInterface $r, array $keys): array
{
    $out = [];
    foreach ($keys as $k) {
        $out[$k] = $r[$k];
    }
    return $out;
}

const JOB_KEYS = ['tube', 'state', 'pri', 'ttr', 'delay', 'reserves', 'timeouts', 'releases', 'buries', 'kicks'];
const TUBE_KEYS = [
    'name', 'current-jobs-urgent', 'current-jobs-ready', 'current-jobs-reserved',
    'current-jobs-delayed', 'current-jobs-buried', 'total-jobs', 'current-using',
    'current-watching', 'current-waiting', 'cmd-delete', 'cmd-pause-tube', 'pause',
];

function body(?Job $j): ?string
{
    return $j === null ? null : $j->getData();
}

function scenario(int $port): array
{
    $log = [];
    $p = Pheanstalk::create('127.0.0.1', $port);
    $other = Pheanstalk::create('127.0.0.1', $port);

    rec($log, 'list-tube-used', fn () => $p->listTubeUsed(true));
    $p->useTube('jobs');
    $a = $p->put("binary\r\nbody\0with nul", 100, 0, 10);
    $b = $p->put('second', 50);
    $c = $p->put('far', 1024, 7200);
    $d = $p->put('urgent', 0);
    rec($log, 'ids increase', fn () => $a->getId() < $b->getId() && $b->getId() < $c->getId()
        && $c->getId() < $d->getId());
    rec($log, 'list-tubes', function () use ($p) {
        $t = $p->listTubes();
        sort($t);
        return $t;
    });
    rec($log, 'stats-tube jobs', fn () => pick($p->statsTube('jobs'), TUBE_KEYS));

    $p->watchOnly('jobs');
    rec($log, 'watched', fn () => $p->listTubesWatched(true));
    $j = $p->reserveWithTimeout(0);
    rec($log, 'reserve urgent first', fn () => [$j->getData(), $j->getId() === $d->getId()]);
    rec($log, 'stats-job reserved', fn () => pick($p->statsJob($j), JOB_KEYS));
    rec($log, 'touch', fn () => $p->touch($j));
    rec($log, 'release with delay', fn () => $p->release($j, 9, 30));
    rec($log, 'stats-job released', fn () => pick($p->statsJob($j), JOB_KEYS));
    rec($log, 'peek-delayed', fn () => body($p->peekDelayed()));

    $j2 = $p->reserveWithTimeout(0);
    rec($log, 'reserve by priority', fn () => $j2->getData());
    rec($log, 'delete by non-holder', fn () => $other->delete($j2));
    rec($log, 'bury', fn () => $p->bury($j2, 1));
    rec($log, 'peek-buried', fn () => body($p->peekBuried()));
    rec($log, 'kick-job', fn () => $p->kickJob($j2));
    rec($log, 'stats-job kicked', fn () => pick($p->statsJob($j2), JOB_KEYS));

    $j3 = $p->reserveWithTimeout(0);
    rec($log, 'reserve again', fn () => $j3->getData());
    $j4 = $p->reserveWithTimeout(0);
    rec($log, 'binary body intact', fn () => $j4->getData());
    rec($log, 'reserve empty', fn () => $p->reserveWithTimeout(0));
    rec($log, 'delete', fn () => $p->delete($j4));
    rec($log, 'peek deleted', fn () => $p->peek(new JobId($j4->getId())));
    rec($log, 'stats-job deleted', fn () => $p->statsJob(new JobId($j4->getId())));
    rec($log, 'kick delayed', fn () => $p->kick(5));
    rec($log, 'peek-ready', fn () => body($p->peekReady()));
    rec($log, 'cancel far delayed', fn () => $p->delete($c));
    rec($log, 'peek far after cancel', fn () => $p->peek($c));

    rec($log, 'pause-tube', fn () => $p->pauseTube('jobs', 60));
    rec($log, 'stats-tube paused', fn () => pick($p->statsTube('jobs'), TUBE_KEYS));
    rec($log, 'reserve paused', fn () => $p->reserveWithTimeout(0));
    rec($log, 'resume-tube', fn () => $p->resumeTube('jobs'));
    rec($log, 'ignore last', fn () => $p->ignore('jobs')->listTubesWatched(true));
    rec($log, 'too big', fn () => $p->put(str_repeat('x', 65536)));
    rec($log, 'stats keys', function () use ($p) {
        $keys = array_values(array_diff(array_keys($p->stats()->getArrayCopy()), YAAD_EXTRA_STATS));
        sort($keys);
        return $keys;
    });
    rec($log, 'stats counters', fn () => pick($p->stats(), [
        'cmd-put', 'cmd-reserve-with-timeout', 'cmd-delete', 'cmd-bury', 'cmd-kick', 'cmd-touch',
        'cmd-release', 'cmd-peek', 'cmd-stats-job', 'total-jobs', 'current-tubes',
        'current-connections', 'current-jobs-ready', 'current-jobs-delayed',
    ]));
    return $log;
}

$servers = [['beanstalkd 1.12', [$beanstalkd]], ['yaad (no -b)', [$yaad]]];
$dirs = [];
foreach (['mem', 'mapped', 'lazy'] as $mode) {
    $dir = sys_get_temp_dir() . '/yaad-pheanstalk-' . bin2hex(random_bytes(6));
    mkdir($dir);
    $dirs[] = $dir;
    $servers[] = ["yaad --mode $mode", [$yaad, '--mode', $mode, '-b', $dir]];
}

$results = [];
try {
    foreach ($servers as [$name, $cmd]) {
        $results[] = [$name, with_server($cmd, 'scenario')];
    }
} finally {
    foreach ($dirs as $dir) {
        exec('rm -rf ' . escapeshellarg($dir));
    }
}

[$refName, $ref] = $results[0];
if (getenv('VERBOSE')) {
    foreach ($ref as $step) {
        echo '  ', json_encode($step), "\n";
    }
}
$failed = false;
foreach (array_slice($results, 1) as [$name, $log]) {
    if ($log === $ref) {
        printf("ok   %s: %d steps equal to %s\n", $name, count($log), $refName);
        continue;
    }
    $failed = true;
    for ($i = 0; $i < max(count($log), count($ref)); $i++) {
        if (($log[$i] ?? null) !== ($ref[$i] ?? null)) {
            break;
        }
    }
    printf("FAIL %s: step %d differs\n  %s: %s\n  %s: %s\n", $name, $i, $refName,
        json_encode($ref[$i] ?? null), $name, json_encode($log[$i] ?? null));
}
exit($failed ? 1 : 0);
