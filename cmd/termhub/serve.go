package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"

	"github.com/termhub/termhub/app"
	"github.com/termhub/termhub/config"
	"github.com/termhub/termhub/internal/certfile"
	"github.com/termhub/termhub/internal/gcfloor"
	"github.com/termhub/termhub/internal/redisx"
)

func newLogger(level string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	var log zerolog.Logger
	if term.IsTerminal(int(os.Stderr.Fd())) {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"})
	} else {
		log = zerolog.New(os.Stderr)
	}
	return log.Level(lvl).With().Timestamp().Logger()
}

// httpErrorWriter logs the lines net/http writes: a recovered handler
// panic at error level, everything else (TLS handshake failures, which any
// scanner causes, bad requests) at debug.
type httpErrorWriter struct{ log zerolog.Logger }

func (w httpErrorWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	ev := w.log.Debug()
	if strings.Contains(line, "panic") {
		ev = w.log.Error()
	}
	ev.Str("source", "net/http").Msg(line)
	return len(p), nil
}

// startApp opens Redis and starts the App on it, trying again every few
// seconds while Redis does not answer, until ctx ends.
func startApp(ctx context.Context, cfg config.Config, log zerolog.Logger) (*redisx.Store, *app.App, error) {
	for attempt := 0; ; attempt++ {
		store, err := openStore(ctx, cfg)
		if err == nil {
			switch {
			case store.Embedded:
				log.Warn().Msg("running on the embedded in-process Redis: nothing survives a restart (set redis_url for durability)")
			case attempt > 0:
			case cfg.RedisCluster != "":
				log.Info().Int("seeds", len(cfg.ClusterSeeds())).Msg("using the Redis Cluster from redis_cluster")
			default:
				log.Info().Msg("using Redis from redis_url")
			}
			a := app.New(cfg, store.Client, nil, log)
			if err = a.Start(ctx); err == nil {
				return store, a, nil
			}
			a.Close()
			store.Close()
		}
		var perr *redisx.ParseError
		if errors.As(err, &perr) || (cfg.RedisURL == "" && cfg.RedisCluster == "") {
			return nil, nil, err
		}
		log.Error().Err(err).Msg("Redis does not answer at start-up: waiting for it")
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-time.After(min(time.Duration(attempt+1)*time.Second, 5*time.Second)):
		}
	}
}

// openStore opens the Redis the configuration names: a Redis Cluster
// (redis_cluster), one server (redis_url), or the embedded one.
func openStore(ctx context.Context, cfg config.Config) (*redisx.Store, error) {
	if seeds := cfg.ClusterSeeds(); seeds != nil {
		return redisx.OpenCluster(ctx, seeds, cfg.RequestTimeout.D())
	}
	return redisx.Open(ctx, cfg.RedisURL, cfg.RequestTimeout.D())
}

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "YAML configuration file (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return errors.New("serve: --config FILE is required")
	}
	cfg, err := config.Load(*cfgPath, nil)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogLevel)
	// The soft memory limit (memory_limit or GOMEMLIMIT, the lower), and
	// fewer collections on a small heap, never past that limit
	// (internal/gcfloor); GOGC in the environment turns the tuning off.
	// Read at start only: a reload does not change it.
	defer gcfloor.Start(gcfloor.Options{MemoryLimit: int64(cfg.MemoryLimit)})()
	if l := gcfloor.Limit(); l > 0 {
		log.Info().Int64("memory_limit", l).Msg("soft memory limit")
	}

	ctx := context.Background()
	// A hub started while Redis is down (an outage, a restart of both)
	// waits for it rather than exiting; SIGTERM or SIGINT end the wait.
	wctx, stopWaiting := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stopWaiting()
	store, a, err := startApp(wctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	stopWaiting()

	srv, ln, certs, err := listen(cfg, a, log)
	if err != nil {
		return err
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	for {
		select {
		case err := <-serveErr:
			return err
		case s := <-sigs:
			if s == syscall.SIGHUP {
				reload(certs, *cfgPath, a, log)
				continue
			}
			log.Info().Str("signal", s.String()).Msg("draining")
			drain(ctx, a, srv)
			log.Info().Msg("drained; bye")
			return nil
		}
	}
}

// listen opens the configured listener: with tls_cert_file and
// tls_key_file the one listener serves HTTPS and WSS; without them a
// TLS-terminating proxy in front is expected (certs is then nil).
func listen(cfg config.Config, a *app.App, log zerolog.Logger) (*http.Server, net.Listener, *certfile.Loader, error) {
	var certs *certfile.Loader
	if cfg.TLSCertFile != "" {
		var err error
		if certs, err = certfile.Load(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return nil, nil, nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, nil, nil, err
	}
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: stdlog.New(httpErrorWriter{log}, "", 0)}
	scheme := "http"
	if certs != nil {
		srv.TLSConfig = certs.Config()
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	log.Info().Str("listen", ln.Addr().String()).Str("scheme", scheme).Str("version", version).Int("merchants", len(cfg.Merchants)).Msg("termhub serving")
	return srv, ln, certs, nil
}

// reload is SIGHUP. A renewed certificate under the same file names is
// taken up for new connections (open ones keep theirs), whether or not the
// configuration file is valid: a broken edit of the file must not keep an
// expiring certificate in use.
func reload(certs *certfile.Loader, cfgPath string, a *app.App, log zerolog.Logger) {
	if certs != nil {
		if err := certs.Reload(); err != nil {
			log.Error().Err(err).Msg("TLS certificate reload refused: keeping the one in use")
		} else {
			log.Info().Msg("TLS certificate reloaded")
		}
	}
	next, err := config.Load(cfgPath, nil)
	if err != nil {
		log.Error().Err(err).Msg("reload refused: keeping the running configuration")
		return
	}
	a.Reload(next)
	log.Info().Int("merchants", len(next.Merchants)).Msg("configuration reloaded")
}

// drain ends the hub: WebSocket clients first (they are told to
// reconnect), then the plain HTTP requests still running, each with its
// own budget.
func drain(ctx context.Context, a *app.App, srv *http.Server) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_ = a.Drain(dctx)
	cancel()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_ = srv.Shutdown(sctx)
	cancel()
}
