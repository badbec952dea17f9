package apiserver

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"msb.dev/msb/apis/v1alpha1"
	"msb.dev/msb/vmdriver/agent"
)

// flushWriter flushes the response after every write so a follower sees
// output as it is produced.
type flushWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, f.rc.Flush()
}

// logs streams a sandbox's log (log.1 then log). With follow it keeps
// streaming appended output, across rotations, until the client goes away or
// the sandbox is deleted.
func (s *server) logs(w http.ResponseWriter, r *http.Request) error {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	follow, err := boolParam(r.URL.Query(), "follow")
	if err != nil {
		return err
	}
	tail := -1
	if v := r.URL.Query().Get("tailLines"); v != "" {
		if tail, err = strconv.Atoi(v); err != nil || tail < 0 {
			return badRequest("tailLines=%q: want a number of lines, 0 or more", v)
		}
	}
	timestamps, err := boolParam(r.URL.Query(), "timestamps")
	if err != nil {
		return err
	}
	var since time.Time
	if v := r.URL.Query().Get("sinceSeconds"); v != "" {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs <= 0 {
			return badRequest("sinceSeconds=%q: want a positive number of seconds", v)
		}
		since = time.Now().Add(-time.Duration(secs) * time.Second)
	}
	previous, err := boolParam(r.URL.Query(), "previous")
	if err != nil {
		return err
	}
	lineMode := timestamps || !since.IsZero() || previous
	if previous && follow {
		return badRequest("previous cannot be followed: that run has ended")
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if follow {
		// Watch before reading the sandbox so its deletion cannot slip between.
		ch, err := s.store.Watch(ctx, 0)
		if err != nil {
			return storeError(err, "sandboxes", ns, name)
		}
		go func() {
			for ev := range ch {
				if ev.Type == "DELETED" && ev.Object != nil && ev.Kind == v1alpha1.KindSandbox {
					if m := ev.Object.GetMetadata(); m.Namespace == ns && m.Name == name {
						cancel()
					}
				}
			}
		}()
	}
	var sb v1alpha1.Sandbox
	if err := s.store.Get(v1alpha1.KindSandbox, ns, name, &sb); err != nil {
		return storeError(err, "sandboxes", ns, name)
	}
	if s.rt == nil {
		return &apiError{code: http.StatusNotImplemented, reason: "NotImplemented", msg: "this server has no sandbox runtime"}
	}
	dir, err := s.rt.LogDir(&sb)
	if err != nil {
		return badRequest("sandboxes %q in namespace %q has no log: %v", name, ns, err)
	}
	// The previous run's lines are read before the answer starts, so that
	// a missing one is a plain error, not a cut stream.
	var prev bytes.Buffer
	if previous {
		err := agent.ReadLogLines(dir, &prev, agent.LogReadOptions{Tail: tail, Timestamps: timestamps, Since: since, Previous: true})
		if errors.Is(err, agent.ErrNoPreviousRun) {
			return badRequest("sandbox %q in namespace %q: %v", name, ns, err)
		}
		if err != nil {
			return err
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	fw := flushWriter{w: w, rc: http.NewResponseController(w)}
	if err := fw.rc.Flush(); err != nil {
		return nil
	}
	switch {
	case previous:
		_, err = prev.WriteTo(fw)
	case follow:
		err = agent.FollowLogLines(ctx, dir, fw, agent.LogReadOptions{Tail: tail, Timestamps: timestamps, Since: since})
	case lineMode:
		err = agent.ReadLogLines(dir, fw, agent.LogReadOptions{Tail: tail, Timestamps: timestamps, Since: since})
	default:
		err = agent.ReadLogTail(dir, fw, tail)
	}
	if err != nil && ctx.Err() == nil {
		s.log.Warn("log stream ended", "key", v1alpha1.Key(v1alpha1.KindSandbox, ns, name), "err", err)
	}
	return nil
}
