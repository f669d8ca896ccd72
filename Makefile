# Shoal. `make demo` runs a three-node cluster on loopback; `make test` runs
# the tests. Both install what they need first (fixtures/setup.sh).

GO        ?= go
BIN       := bin
PKGS      := ./...
# The concurrent packages run under the race detector in `make test`.
TESTFLAGS ?= -race -count=1 -timeout 28m
BENCHOUT  := bench-results
# Failovers measured per mode by bench-failover.
FAILOVER_RUNS ?= 20

.PHONY: man completion all build setup setup-demo test test-short test-demo soak bench bench-web bench-dlm bench-volume bench-iscsi bench-failover bench-store lint demo demo-stop clean fuzz

all: build

setup:
	@./fixtures/setup.sh

# What the demo alone needs (fewer packages than the tests and benchmarks).
setup-demo:
	@./fixtures/setup.sh demo

build:
	$(GO) build -o $(BIN)/ ./cmd/...

test: setup build
	$(GO) vet $(PKGS)
	$(GO) test $(TESTFLAGS) $(PKGS)

test-short:
	$(GO) test -short -count=1 -timeout 10m $(PKGS)

# The demo script end to end: kill -9 of a node, start brings it back,
# restart, the foreground events (about 40 s on the demo's fixed addresses).
test-demo: setup
	$(GO) test -race -count=1 -run TestDemoBringsBackAStoppedNode ./cmd/shoald -args -shoald.demo

# The long campaigns kept out of `make test`, each behind its own test flag:
# the mirror's randomized crash test for SOAK, every store crash flavour at
# every write, a directory of 100000 entries, 2000 rounds of random store
# metadata damage repaired, 20 coordinator pauses, 10 kills of the etcd
# leader's node and 10 stops of every node at once, each in the middle of
# the comeback from the one before.
SOAK ?= 10m
soak: setup build
	$(GO) test -race -count=1 -timeout 60m -run '^TestCrashRandomized$$' ./blockdev/mirror -args -mirror.soak $(SOAK)
	$(GO) test -race -count=1 -timeout 60m -run '^TestCrashEveryWrite$$' ./store -args -store.crashlong
	$(GO) test -count=1 -timeout 60m -run '^TestBigDirectory$$' ./store -args -store.bigdir 100000
	$(GO) test -count=1 -timeout 60m -run '^TestRepairRandomDamage$$' ./store -args -store.repairrounds 2000
	$(GO) test -race -count=1 -timeout 60m -run '^TestPausedCoordinatorIsReplaced$$' ./cmd/shoald -args -coordpause.runs 20
	$(GO) test -race -count=1 -timeout 60m -run '^TestLeaderLossKeepsOtherLeases$$' ./cmd/shoald -args -leaderloss.rounds 10
	$(GO) test -race -count=1 -timeout 60m -run '^TestWholeClusterPauseKeepsEveryAdd$$' ./cmd/shoald -args -wholeloss.rounds 10
	$(GO) test -race -count=20 -timeout 60m -run '^TestWriterKilledMidTransaction$$' ./store/killtest

# Short fuzz runs of every decoder (30 s each by default).
FUZZTIME ?= 30s
fuzz:
	@./tools/fuzz.sh $(FUZZTIME)

bench: bench-dlm bench-volume bench-iscsi bench-failover bench-web bench-store
	@cat $(BENCHOUT)/*.txt

bench-dlm: setup build
	@mkdir -p $(BENCHOUT)
	$(GO) run ./tools/benchdlm -out $(BENCHOUT)/dlm.txt

bench-volume: setup
	@mkdir -p $(BENCHOUT)
	$(GO) run ./tools/benchvolume -out $(BENCHOUT)/volume.txt

# The store on the demo's volume vs ext4 on a loop-mounted image (root).
bench-store: setup
	@mkdir -p $(BENCHOUT)
	$(GO) run ./tools/benchstore -out $(BENCHOUT)/store.txt

bench-iscsi: setup build
	@mkdir -p $(BENCHOUT)
	$(GO) run ./tools/benchiscsi -out $(BENCHOUT)/iscsi.txt

bench-failover: setup build
	@mkdir -p $(BENCHOUT)
	$(GO) test ./tools/benchfailover -run '^$$' -bench . -benchtime 1x -timeout 30m -args -runs $(FAILOVER_RUNS) -out $(CURDIR)/$(BENCHOUT)/failover.txt

# Web tier vs nginx (wrk, h2load) and the sessions API; see tools/benchweb.
bench-web: setup build
	@mkdir -p $(BENCHOUT)
	$(GO) run ./tools/benchweb -out $(BENCHOUT)/web.txt

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@latest $(PKGS)

demo: setup-demo build
	@./fixtures/demo.sh start

demo-stop:
	@./fixtures/demo.sh stop

# Man pages (section 1) and shell completion scripts of shoald, shoalblk and
# lockctl, generated from the same command trees as --help.
DIST     := dist
COMMANDS := shoald shoalblk lockctl
man: build
	@mkdir -p $(DIST)/man/man1
	@for c in $(COMMANDS); do $(BIN)/$$c man $(DIST)/man/man1 || exit 1; done
	@echo "man pages in $(DIST)/man/man1 (read one with: man -l $(DIST)/man/man1/shoald.1)"

completion: build
	@mkdir -p $(DIST)/completion/bash $(DIST)/completion/zsh $(DIST)/completion/fish
	@for c in $(COMMANDS); do \
		$(BIN)/$$c completion bash > $(DIST)/completion/bash/$$c && \
		$(BIN)/$$c completion zsh > $(DIST)/completion/zsh/_$$c && \
		$(BIN)/$$c completion fish > $(DIST)/completion/fish/$$c.fish || exit 1; \
	done
	@echo "completion scripts in $(DIST)/completion (bash: source $(DIST)/completion/bash/shoald)"

clean:
	rm -rf $(BIN) $(BENCHOUT) demo-data $(DIST) test-artefacts
