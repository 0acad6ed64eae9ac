-- expect: prohibited-column
SELECT person_id, COUNT(*) FROM residents GROUP BY person_id
