# Differential test with a published Ruby client (Debian's ruby-beaneater): the same scenario
# runs against beanstalkd 1.12 and against yaad in each mode, and the transcripts of what the
# library returned must be equal.
#
#   ruby tests/clients/beaneater_test.rb target/debug/yaad [beanstalkd]
#
# Exits non-zero and prints both transcripts where they first differ.

require 'beaneater'
require 'socket'
require 'tmpdir'

YAAD = ARGV[0] or abort('usage: beaneater_test.rb YAAD_BINARY [BEANSTALKD_BINARY]')
BEANSTALKD = ARGV[1] || 'beanstalkd'
# Keys yaad's `stats` adds to beanstalkd's (documented in README "Differences").
YAAD_EXTRA_STATS = (%w[corrupt_records_skipped data_bytes hub_lock_acquisitions hub_lock_contended hub_lock_held_us hub_lock_wait_us mode segments_open spokes syncs sync_changes sync_us] +
                    %w[create load compact retire split other].flat_map { |k| %w[1 5].flat_map { |ms| ["hub_lock_holds_over_#{ms}ms_#{k}", "hub_lock_timer_cpu_over_#{ms}ms_#{k}"] } }).freeze

def free_port
  s = TCPServer.new('127.0.0.1', 0)
  port = s.addr[1]
  s.close
  port
end

# Starts a server, yields its address, stops it.
def with_server(cmd)
  port = free_port
  pid = Process.spawn(*cmd, '-l', '127.0.0.1', '-p', port.to_s, out: File::NULL, err: File::NULL)
  begin
    deadline = Time.now + 10
    begin
      TCPSocket.new('127.0.0.1', port).close
    rescue Errno::ECONNREFUSED
      raise "#{cmd.join(' ')} did not listen on #{port}" if Time.now > deadline

      sleep 0.02
      retry
    end
    yield "127.0.0.1:#{port}"
  ensure
    Process.kill('TERM', pid)
    Process.wait(pid)
  end
end

# Runs `blk` and records its value, or the class of the error it raised.
def rec(log, label)
  log << [label, yield]
rescue StandardError => e
  log << [label, "raised #{e.class}"]
end

# Job stats that do not depend on timing.
def job_view(job)
  s = job.stats
  [s.tube, s.state, s.pri, s.ttr, s.delay, s.reserves, s.timeouts, s.releases, s.buries, s.kicks]
end

def tube_view(tube)
  s = tube.stats
  [s.name, s.current_jobs_urgent, s.current_jobs_ready, s.current_jobs_reserved,
   s.current_jobs_delayed, s.current_jobs_buried, s.total_jobs, s.current_using,
   s.current_watching, s.current_waiting, s.cmd_delete, s.cmd_pause_tube, s.pause]
end

def scenario(address)
  log = []
  client = Beaneater.new(address)
  other = Beaneater.new(address)
  begin
    tubes = client.tubes
    rec(log, 'used') { tubes.used.name }
    rec(log, 'watched') { tubes.watched.map(&:name) }

    t1 = tubes['t1']
    a = t1.put("hello\r\nworld", pri: 10, ttr: 5)
    b = t1.put('second', pri: 5)
    c = t1.put('later', delay: 3600)
    d = t1.put('urgent', pri: 0)
    rec(log, 'put statuses') { [a[:status], b[:status], c[:status], d[:status]] }
    rec(log, 'ids increase') { [a[:id], b[:id], c[:id], d[:id]].each_cons(2).all? { |x, y| y.to_i > x.to_i } }
    rec(log, 'all tubes') { tubes.all.map(&:name).sort }
    rec(log, 'tube t1') { tube_view(t1) }

    tubes.watch!('t1')
    rec(log, 'watched after watch!') { tubes.watched.map(&:name) }
    j1 = tubes.reserve(0)
    rec(log, 'first reserve') { [j1.body, j1.id == d[:id]] }
    rec(log, 'reserved stats') { job_view(j1) }
    rec(log, 'touch') { j1.touch }
    rec(log, 'release delayed') { j1.release(delay: 60, pri: 7) }
    rec(log, 'released stats') { job_view(j1) }
    rec(log, 'peek delayed') { t1.peek(:delayed).id == d[:id] }

    j2 = tubes.reserve(0)
    rec(log, 'second reserve') { [j2.body, j2.id == b[:id]] }
    rec(log, 'reserved? by holder') { j2.reserved? }
    rec(log, 'delete by other') { other.jobs.find(j2.id).delete }
    rec(log, 'bury') { j2.bury(pri: 3) }
    rec(log, 'buried stats') { job_view(j2) }
    rec(log, 'peek buried') { t1.peek(:buried).body }

    j3 = tubes.reserve(0)
    rec(log, 'third reserve (binary body)') { [j3.body, j3.id == a[:id]] }
    rec(log, 'reserve on empty') { tubes.reserve(0) }
    rec(log, 'tube t1 with one reserved') { tube_view(t1) }
    rec(log, 'delete reserved') { j3.delete }
    rec(log, 'exists after delete') { j3.exists? }
    rec(log, 'find deleted') { client.jobs.find(j3.id) }

    rec(log, 'kick buried first') { t1.kick(10) }
    rec(log, 'kicked stats') { job_view(client.jobs.find(j2.id)) }
    rec(log, 'kick delayed next') { t1.kick(10) }
    rec(log, 'peek ready') { t1.peek(:ready).body }
    rec(log, 'kick job (not buried/delayed)') { client.jobs.find(c[:id]).kick }
    rec(log, 'delete far delayed (cancel)') { client.jobs.find(c[:id]).delete }
    rec(log, 'peek delayed after cancel') { t1.peek(:delayed) }

    rec(log, 'pause') { t1.pause(30) }
    rec(log, 'tube t1 paused') { tube_view(t1) }
    rec(log, 'reserve from paused') { tubes.reserve(0) }
    rec(log, 'unpause') { t1.pause(0) }
    rec(log, 'clear') { t1.clear }
    rec(log, 'tube t1 cleared') { tube_view(t1) }

    rec(log, 'ignore last tube') do
      tubes.ignore('default')
      tubes.ignore('t1')
    end
    rec(log, 'bad tube name') { tubes['-bad'].put('x') }
    rec(log, 'big job') { tubes['t2'].put('x' * (70 * 1024)) }
    # yaad adds its own keys (storage figures); every beanstalkd key must be there.
    rec(log, 'stats keys') { (client.stats.keys - YAAD_EXTRA_STATS).sort }
    rec(log, 'stats counters') do
      s = client.stats
      [s.cmd_put, s.cmd_reserve, s.cmd_delete, s.cmd_bury, s.cmd_kick, s.cmd_touch, s.cmd_release,
       s.job_timeouts, s.total_jobs, s.current_tubes, s.current_connections]
    end
  ensure
    client.close
    other.close
  end
  log
end

servers = [['beanstalkd 1.12', [BEANSTALKD]]]
dirs = []
servers << ['yaad (no -b)', [YAAD]]
%w[mem mapped lazy].each do |mode|
  dir = Dir.mktmpdir('yaad-beaneater')
  dirs << dir
  servers << ["yaad --mode #{mode}", [YAAD, '--mode', mode, '-b', dir]]
end

begin
  results = servers.map { |name, cmd| [name, with_server(cmd) { |addr| scenario(addr) }] }
ensure
  dirs.each { |d| FileUtils.remove_entry(d) }
end

reference_name, reference = results.first
reference.each { |step| puts "  #{step.inspect}" } if ENV['VERBOSE']
failed = false
results.drop(1).each do |name, log|
  if log == reference
    puts "ok   #{name}: #{log.size} steps equal to #{reference_name}"
    next
  end
  failed = true
  i = (0...[log.size, reference.size].max).find { |k| log[k] != reference[k] }
  puts "FAIL #{name}: step #{i} differs"
  puts "  #{reference_name}: #{reference[i].inspect}"
  puts "  #{name}: #{log[i].inspect}"
end
exit(failed ? 1 : 0)
