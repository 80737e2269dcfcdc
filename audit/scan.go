package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// Scan calls fn for every record of the trail in dir, oldest first, reading
// the rotated files and then the current one, one line at a time (a long
// trail is never held in memory). It parses records without checking the
// chain (that is Verify's job). A last line of the current file that does
// not parse is taken to be an append in progress and skipped; any other
// line that does not parse is an error. An error from fn ends the scan and
// is returned.
func Scan(dir string, fn func(Record) error) error {
	files, err := trailFiles(dir)
	if err != nil {
		return err
	}
	for i, path := range files {
		if err := scanFile(path, i == len(files)-1, fn); err != nil {
			return err
		}
	}
	return nil
}

func scanFile(path string, current bool, fn func(Record) error) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && current {
		return nil // rotated away since it was listed
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var torn error // a line that did not parse: an error unless it was the last
	for line := 1; sc.Scan(); line++ {
		if torn != nil {
			return torn
		}
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			torn = fmt.Errorf("audit: %s:%d: not a record: %v", path, line, err)
			continue
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("audit: %s: %w", path, err)
	}
	if torn != nil && !current {
		return torn
	}
	return nil
}
