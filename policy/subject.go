package policy

import (
	"context"
	"errors"
	"path"
	"strings"
)

// Kinds of what a policy subject names besides tools, as they appear in
// the subject after the upstream's name: <upstream>.prompt:<name> and
// <upstream>.resource:<uri>. Tool names never contain ':', so no tool can
// be mistaken for a prompt or a resource, and a tool glob like "fs.read_*"
// grants no prompt or resource; "fs.*" (every tool of fs) and "*" grant the
// upstream's prompts and resources too.
const (
	KindPrompt   = "prompt:"
	KindResource = "resource:"
)

// PromptSubject is what the policy decides for a prompt of an upstream
// (listed to clients as <upstream>.<prompt>): <upstream>.prompt:<prompt>.
func PromptSubject(upstream, prompt string) string { return upstream + "." + KindPrompt + prompt }

// ResourceSubject is what the policy decides for a resource an upstream
// offers, by its URI as the upstream sent it: <upstream>.resource:<uri>. A
// resource template is listed when its URI template's text matches
// (<upstream>.resource:test://x/{id}), and each read is decided on the
// concrete URI read.
func ResourceSubject(upstream, uri string) string { return upstream + "." + KindResource + uri }

// UpstreamOf returns the upstream a prompt or resource subject belongs to;
// "" for a tool name or anything else.
func UpstreamOf(subject string) string {
	up, rest, ok := strings.Cut(subject, ".")
	if !ok || (!strings.HasPrefix(rest, KindPrompt) && !strings.HasPrefix(rest, KindResource)) {
		return ""
	}
	return up
}

// parts splits a prompt or resource subject into its upstream, its kind
// (KindPrompt or KindResource) and its name (the prompt's name, the URI);
// ok is false for a tool name or anything else.
func parts(subject string) (up, kind, name string, ok bool) {
	up, rest, found := strings.Cut(subject, ".")
	if !found {
		return "", "", "", false
	}
	for _, k := range []string{KindPrompt, KindResource} {
		if name, found := strings.CutPrefix(rest, k); found {
			return up, k, name, true
		}
	}
	return "", "", "", false
}

// match reports whether the allow pattern grants subject, part by part so
// that no glob crosses from tools into prompts or resources. A prompt or
// resource subject is granted only by "*", by "<up>.*" (every tool, prompt
// and resource of that upstream), or by a pattern naming its kind
// ("<up-glob>.resource:<uri-glob>", "<up-glob>.prompt:<name-glob>"): a tool
// glob such as "*_public" or "*.read_*" grants none, whatever URI or
// prompt name the client picks. A pattern naming a kind grants no tool.
// Patterns were validated by New; subjects with control characters were
// refused by Decide (checkSubject).
func match(pattern, subject string) bool {
	up, kind, name, isItem := parts(subject)
	pup, pkind, pname, patItem := parts(pattern)
	switch {
	case isItem && (pattern == "*" || pattern == up+".*"):
		return true
	case isItem != patItem || kind != pkind:
		return false
	case !isItem:
		return glob(pattern, subject)
	}
	ok, _ := path.Match(pup, up)
	return ok && glob(pname, name)
}

// glob is path.Match with '/' an ordinary character, so that * crosses the
// slashes of resource URIs ("fs.resource:file:///srv/*" matches whole
// URIs). '/' is mapped to NUL for path.Match, so a subject holding a NUL
// never matches (Decide refuses such subjects before matching anyway).
func glob(pattern, s string) bool {
	const slash = "\x00"
	if strings.Contains(s, slash) {
		return false
	}
	ok, _ := path.Match(strings.ReplaceAll(pattern, "/", slash), strings.ReplaceAll(s, "/", slash))
	return ok
}

// Enforcer decides a subject for the request whose context carries it:
// the gateway puts one in the context of every resources/read and
// prompts/get, bound to the caller and the policy in force.
type Enforcer func(subject string) Decision

type enforcerKey struct{}

// WithEnforcer returns ctx carrying e, for Enforce.
func WithEnforcer(ctx context.Context, e Enforcer) context.Context {
	return context.WithValue(ctx, enforcerKey{}, e)
}

// Enforce decides subject with the enforcer of ctx and records the
// decision for the request (WithDecision), so the audit trail says what was
// enforced. It is how a resource or prompt handler, which alone knows
// which upstream serves what it was asked for, authorizes it. It fails
// closed: a context without an enforcer is denied.
func Enforce(ctx context.Context, subject string) Decision {
	e, _ := ctx.Value(enforcerKey{}).(Enforcer)
	if e == nil {
		return Decision{Tool: subject, Rule: -1, Reason: "no authorization policy is in force"}
	}
	d := e(subject)
	WithDecision(ctx, d)
	return d
}

// ErrDenied is the error of a resource read or prompt get the policy
// denies; its text goes on to say why.
var ErrDenied = errors.New("permission denied")
