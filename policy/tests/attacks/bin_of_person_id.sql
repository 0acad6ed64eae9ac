-- expect: prohibited-column
SELECT person_id - person_id % 10 AS band, COUNT(*) FROM residents GROUP BY person_id - person_id % 10
