package identity_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/pki/pkitest"
)

func TestFromCertificate(t *testing.T) {
	s := pkitest.NewStore(t)
	caCert, caKey := pkitest.LoadCA(t, s)
	tests := []struct {
		name    string
		ou      string
		want    pki.Role
		wantErr bool
	}{
		{"agent", "agent", pki.RoleAgent, false},
		{"operator", "operator", pki.RoleOperator, false},
		{"no OU", "", "", true},
		{"unknown role", "admin", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kp := pkitest.SignLeaf(t, caCert, caKey, pkitest.Leaf{CN: "c-" + tt.name, OU: tt.ou})
			a, err := identity.FromCertificate(kp.Leaf)
			if tt.wantErr {
				if !errors.Is(err, identity.ErrNoRole) {
					t.Fatalf("err = %v, want ErrNoRole", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Name != "c-"+tt.name || a.Role != tt.want || a.Serial != pki.FormatSerial(kp.Leaf.SerialNumber) || a.Fingerprint != pki.Fingerprint(kp.Leaf) {
				t.Errorf("identity = %+v", a)
			}
		})
	}
	t.Run("two OUs", func(t *testing.T) {
		kp := pkitest.SignLeaf(t, caCert, caKey, pkitest.Leaf{CN: "x", OU: "agent"})
		kp.Leaf.Subject.OrganizationalUnit = append(kp.Leaf.Subject.OrganizationalUnit, "operator")
		if _, err := identity.FromCertificate(kp.Leaf); !errors.Is(err, identity.ErrNoRole) {
			t.Fatalf("err = %v, want ErrNoRole", err)
		}
	})
}

func TestContext(t *testing.T) {
	if _, ok := identity.FromContext(context.Background()); ok {
		t.Fatal("empty context has an identity")
	}
	a := identity.LocalOperator(identity.TransportStdio)
	got, ok := identity.FromContext(identity.WithAgent(context.Background(), a))
	if !ok || got != a || got.Role != pki.RoleOperator {
		t.Fatalf("round trip = %+v, %v", got, ok)
	}
}
