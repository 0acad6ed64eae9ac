-- expect: prohibited-column
SELECT h.person_id, r.district FROM health_visits h JOIN residents r ON h.person_id = r.person_id
